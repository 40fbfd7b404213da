"""Where a point is trained and measured."""
