"""Pictures of Pareto fronts, one study or several overlaid, as PNG or a self-contained page.

Matplotlib is imported only inside `plot_fronts`, and drawn through a bare `Figure` (Agg for
PNG, the SVG backend for HTML), so no GUI backend is chosen and no pyplot state is touched.

>>> import os, tempfile
>>> from tnas.search.db import Database
>>> folder = tempfile.TemporaryDirectory()
>>> db = Database(os.path.join(folder.name, "search.db"))
>>> plot_fronts(db, ["demo"], os.path.join(folder.name, "front.svg"))
Traceback (most recent call last):
...
ValueError: cannot plot to 'front.svg': give a path ending in .png or .html
>>> db.close()
>>> folder.cleanup()
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tnas.search.query import objectives_text, study_objectives
from tnas.space.errors import shown

if TYPE_CHECKING:
    import numpy as np

    from tnas.search.db import Database

SUFFIXES = (".png", ".html")
PNG_DPI = 120


@dataclass
class StudyFront:
    """What one study contributes to the picture, values in natural units (not minimised)."""

    name: str
    objectives: list[dict[str, str]]
    completed: np.ndarray  # (n, m) values of every completed trial
    front: list[dict[str, Any]]  # {"number", "values", "config_hash"}, best first on objective 0
    reference: list[float] | None  # the study's reference point (natural units); None without
    snapshot: dict[str, Any] | None = None  # the latest front snapshot, None before the first
    hypervolume: float | None = None  # against the picture's reference point


def plot_fronts(
    db: Database,
    study_names: Sequence[str],
    path: str | Path,
    ref_point: Sequence[float] | None = None,
) -> Path:
    """Draw the completed trials and the latest front of each study; return the path written.

    The first two objectives are the axes (a 3+-objective study says so in the title). Each
    study has one colour: its completed trials light, its front as markers joined by the
    staircase of the region it dominates, and a legend entry with its hypervolume. The
    hypervolumes are measured against one reference point, named in the title: `ref_point`
    (natural units) if given, else the study's own frozen one (`tnas.search.reference`), and
    with several studies the worst of their own, so that they compare (a study with no
    snapshot yet gets one derived from its completed trials). `.png` writes a PNG; `.html` a
    page with the figure as inline SVG and
    a table of the front members. Studies with different objectives, and a path that cannot
    be written, raise `ValueError` (one line).
    """
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise ValueError(
            f"cannot plot to {path.name!r}: give a path ending in {' or '.join(SUFFIXES)}"
        )
    if not study_names:
        raise ValueError("plot_fronts needs at least one study name")
    fronts = [load_study_front(db, name) for name in study_names]
    objectives = fronts[0].objectives
    if any(front.objectives != objectives for front in fronts[1:]):
        described = "; ".join(f"{f.name} ({objectives_text(f.objectives)})" for f in fronts)
        raise ValueError(f"cannot overlay studies with different objectives: {described}")
    if len(objectives) < 2:
        raise ValueError(
            f"a front plot needs two objectives; {', '.join(study_names)} "
            f"has one ({objectives_text(objectives)})"
        )
    caption = _measure(fronts, ref_point)
    figure = _figure(fronts, caption)
    try:
        if path.suffix.lower() == ".png":
            figure.savefig(path, format="png", dpi=PNG_DPI)
        else:
            path.write_text(_html_page(fronts, figure), encoding="utf-8")
    except OSError as err:  # a missing directory, a full disk: one line, as a bad input is
        raise ValueError(f"cannot write {shown(str(path))}: {err.strerror or err}") from None
    return path


def load_study_front(db: Database, study_name: str) -> StudyFront:
    """A study's objectives, completed trials (read in one call) and latest front.

    The front comes from the latest snapshot; a study without one gets the front of its
    completed trials, computed here. An unknown study raises `LookupError`.
    """
    import numpy as np
    import optuna
    from optuna.trial import TrialState

    from tnas.search.pareto import pareto_front, to_minimization
    from tnas.search.reference import reference_of

    objectives = study_objectives(db, study_name)
    study = optuna.load_study(study_name=study_name, storage=db.optuna_storage())
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    completed = np.array([trial.values for trial in trials], dtype=float)
    completed = completed.reshape(len(trials), len(objectives))
    snapshot = db.latest_snapshot(study_name)
    if snapshot is not None:
        front = [
            {
                "number": member["trial_number"],
                "values": list(member["values"]),
                "config_hash": member["config_hash"],
            }
            for member in snapshot["members"]
        ]
    else:
        directions = [objective["direction"] for objective in objectives]
        on_front = pareto_front(to_minimization(completed, directions)) if len(trials) else []
        front = [
            {
                "number": trials[row].number,
                "values": list(trials[row].values),
                "config_hash": trials[row].user_attrs.get("config_hash"),
            }
            for row in on_front
        ]
    directions = [objective["direction"] for objective in objectives]
    reference = reference_of(study.user_attrs, directions, snapshot)[0]
    sign = -1.0 if objectives[0]["direction"] == "max" else 1.0
    front.sort(key=lambda member: (sign * member["values"][0], member["number"]))
    return StudyFront(study_name, objectives, completed, front, reference, snapshot)


def _measure(fronts: list[StudyFront], ref_point: Sequence[float] | None = None) -> str:
    """Set each front's hypervolume against one reference point shared by all of them:
    `ref_point` if given, else the worst of the studies' own (one derived from the completed
    trials of a study with none); return the line that names it."""
    import numpy as np

    from tnas.search.reference import (
        check_reference,
        derive_reference,
        describe_reference,
        measure,
        snapshot_hypervolume,
        worst_reference,
    )

    objectives = fronts[0].objectives
    directions = [objective["direction"] for objective in objectives]
    if ref_point is not None:
        reference, source = check_reference(ref_point, objectives), "given"
    else:
        references = [front.reference for front in fronts if front.reference is not None]
        source = "stored" if len(fronts) == 1 else "worst of stored"
        unmeasured = [f.completed for f in fronts if f.reference is None and len(f.completed)]
        if unmeasured:
            try:
                references.append(derive_reference(np.vstack(unmeasured), directions))
                source = "worst of stored and derived" if references[:-1] else "derived"
            except ValueError:
                pass  # no completed trial has usable values
        if not references:
            return describe_reference(None, objectives, "none")  # no completed trial at all
        reference = worst_reference(references, directions)
    for front in fronts:
        if front.snapshot is not None:
            front.hypervolume = snapshot_hypervolume(front.snapshot, reference, directions)
        elif front.front:
            values = [member["values"] for member in front.front]
            front.hypervolume = measure(values, reference, directions)
    return describe_reference(reference, objectives, source)


def _figure(fronts: list[StudyFront], caption: str = "") -> Any:
    import numpy as np
    from matplotlib.figure import Figure

    objectives = fronts[0].objectives
    x_objective, y_objective = objectives[0], objectives[1]
    figure = Figure(figsize=(7.5, 5.0), layout="constrained")
    axes = figure.add_subplot()
    for index, front in enumerate(fronts):
        colour = f"C{index % 10}"
        if len(front.completed):
            axes.scatter(
                front.completed[:, 0],
                front.completed[:, 1],
                s=12,
                color=colour,
                alpha=0.25,
                linewidths=0,
            )
        hypervolume = "n/a" if front.hypervolume is None else f"{front.hypervolume:.4g}"
        label = f"{front.name} (HV {hypervolume}, {len(front.front)} on front)"
        values = np.array([member["values"] for member in front.front], dtype=float)
        values = values.reshape(len(front.front), len(objectives))
        if len(objectives) == 2 and len(values):
            # Sorted best first on x, the dominated region's edge steps after each point.
            axes.step(values[:, 0], values[:, 1], where="post", color=colour, linewidth=1.5)
        # With 3+ objectives the front members are not a staircase in these two axes: no line.
        axes.scatter(
            values[:, 0],
            values[:, 1],
            s=40,
            color=colour,
            edgecolors="black",
            linewidths=0.6,
            zorder=3,
            label=label,
        )
    axes.set_xlabel(f"{x_objective['name']} ({x_objective['direction']})")
    axes.set_ylabel(f"{y_objective['name']} ({y_objective['direction']})")
    title = (
        f"Pareto front of {fronts[0].name}"
        if len(fronts) == 1
        else f"Pareto fronts of {len(fronts)} studies (HV against one shared reference point)"
    )
    if len(objectives) > 2:
        title += (
            f"\nfirst 2 of {len(objectives)} objectives shown; "
            f"fronts and HV over all {len(objectives)}"
        )
    if caption:
        title += f"\nHV {caption}"
    axes.set_title(title, fontsize=11)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=9)
    return figure


def _html_page(fronts: list[StudyFront], figure: Any) -> str:
    import matplotlib

    buffer = io.StringIO()
    # Text stays text (searchable, small); a fixed hash salt keeps the SVG's ids reproducible.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "tnas"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    objectives = fronts[0].objectives
    names = ", ".join(front.name for front in fronts)
    header = "".join(f"<th>{html.escape(o['name'])} ({o['direction']})</th>" for o in objectives)
    rows = []
    for front in fronts:
        for member in front.front:
            values = "".join(f"<td>{value:.6g}</td>" for value in member["values"])
            digest = member["config_hash"] or ""
            rows.append(
                f"<tr><td>{html.escape(front.name)}</td><td>{member['number']}</td>{values}"
                f"<td><code>{html.escape(digest[:12])}</code></td></tr>"
            )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Pareto fronts: {html.escape(names)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 2px 8px; text-align: right; }}
</style>
</head>
<body>
<h1>Pareto fronts: {html.escape(names)}</h1>
{svg}
<h2>Front members</h2>
<table>
<tr><th>study</th><th>trial</th>{header}<th>config hash</th></tr>
{chr(10).join(rows)}
</table>
</body>
</html>
"""
