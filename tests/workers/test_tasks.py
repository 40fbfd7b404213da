from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from tnas.nn import build_model
from tnas.space import ArchConfig, LayerConfig
from tnas.workers.tasks import TASKS, Metric, Task, create_task, parse_task
from tnas.workers.tasks.textlm import TextLM

SMALL_OPTIONS = {
    "digits": {"tokens": "patch"},
    "mqar": {"vocab_size": 16, "num_pairs": 4, "seq_len": 16, "num_train": 4000, "num_val": 256},
    "textlm": {"seq_len": 32, "max_bytes": 200_000},
}


class TinyTask(Task):
    """A user task outside the registry: copy the input token."""

    name = "tiny"
    head = "lm"
    metrics = (Metric("loss", "min"),)

    def __init__(self, vocab_size: int = 8, seq_len: int = 4, scale: float = 1.0):
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.scale = scale

    def train_batch(self, batch_size: int, generator) -> tuple[Tensor, Tensor]:
        tokens = torch.randint(0, self.vocab_size, (batch_size, self.seq_len), generator=generator)
        return tokens, tokens  # (B, T), (B, T)

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return self.scale * nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def evaluate(self, model: nn.Module, device: str = "cpu") -> dict[str, float]:
        return {"loss": 0.0}


def small_task(name: str) -> Task:
    return create_task(name, **SMALL_OPTIONS[name])


def tiny_config(task: Task, mixer: str = "attention", d_model: int = 32) -> ArchConfig:
    layer = LayerConfig(mixer=mixer, n_heads=2, ffn_dim=2 * d_model)
    config = ArchConfig(d_model=d_model, n_layers=2, tie_embeddings=False, layers=(layer, layer))
    return task.adapt(config)


def train(task: Task, config: ArchConfig, steps: int, batch_size: int, lr: float):
    """A plain AdamW loop; returns validation metrics before and after."""
    torch.manual_seed(0)
    model = build_model(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    before = task.evaluate(model)
    for _ in range(steps):
        inputs, targets = task.train_batch(batch_size, generator)
        loss = task.loss(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return before, task.evaluate(model)


def test_every_registered_task_is_in_the_small_options():
    assert sorted(SMALL_OPTIONS) == sorted(TASKS)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_registered_task_builds_and_its_spec_round_trips(name):
    for task in (create_task(name), small_task(name)):
        assert task.name == name
        assert task.metrics and all(m.direction in ("max", "min") for m in task.metrics)
        rebuilt = parse_task(task.spec)
        assert type(rebuilt) is type(task)
        assert rebuilt.spec == task.spec
        assert rebuilt.options == task.options
    assert create_task(name).spec == name


def test_spec_is_canonical():
    task = parse_task(" mqar , seq_len=32, num_pairs=4,seed=0")
    assert task.spec == "mqar,num_pairs=4,seq_len=32"
    assert parse_task("digits,val_fraction=0.25").val_fraction == 0.25
    assert parse_task("digits,val_fraction=0.25").spec == "digits,val_fraction=0.25"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cifar", "unknown task 'cifar'; valid: digits, mqar, textlm"),
        ("mqar,pairs=8", "task 'mqar' has no option 'pairs'; valid: vocab_size, num_pairs"),
        ("mqar,num_pairs", "expected key=value"),
        ("mqar,seed=1,seed=2", "given twice"),
        ("mqar,num_pairs=8,seq_len=16", "seq_len must be an integer >= 17"),
        ("mqar,vocab_size=8,num_pairs=4", "vocab_size must be an integer >= 9"),
        ("digits,tokens=word", "unknown digits tokens 'word'; valid: pixel, patch"),
        ("digits,val_fraction=1.5", "val_fraction must be in (0, 1)"),
        ("textlm,path=/nonexistent/corpus", "does not exist"),
        ("no_such_module:Task", "cannot import task"),
        ("tnas.workers.tasks:TASKS", "is not a subclass"),
        ("", "has no task name"),
    ],
    ids=lambda value: value if "," not in value else value.replace(",", " "),
)
def test_bad_specs_give_one_line_errors(spec, message):
    with pytest.raises(ValueError) as info:
        parse_task(spec)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_create_task_rejects_unknown_options_like_parse_task():
    with pytest.raises(ValueError, match="task 'digits' has no option 'steps'; valid: tokens"):
        create_task("digits", steps=3)


def test_user_task_through_module_path():
    task = parse_task("tests.workers.test_tasks:TinyTask,vocab_size=5,scale=0.5")
    assert isinstance(task, TinyTask)
    assert (task.vocab_size, task.seq_len, task.scale) == (5, 4, 0.5)
    assert task.spec == "tests.workers.test_tasks:TinyTask,scale=0.5,vocab_size=5"
    assert parse_task(task.spec).options == task.options
    with pytest.raises(ValueError, match="TinyTask' has no option 'foo'; valid: vocab_size"):
        parse_task("tests.workers.test_tasks:TinyTask,foo=1")


def test_spec_refuses_values_it_cannot_write():
    with pytest.raises(ValueError, match="cannot be written in a spec"):
        _ = TinyTask(scale="1.5").spec  # a str that would come back as a float


@pytest.mark.parametrize("name", sorted(TASKS))
def test_same_seed_gives_same_data_and_batches(name):
    first, second = small_task(name), small_task(name)
    for part in first.split:
        for a, b in zip(_tensors(first.split[part]), _tensors(second.split[part]), strict=True):
            assert torch.equal(a, b)
    batch_a = first.train_batch(8, torch.Generator().manual_seed(3))
    batch_b = second.train_batch(8, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(batch_a, batch_b, strict=True))
    other = first.train_batch(8, torch.Generator().manual_seed(4))
    assert not torch.equal(batch_a[0], other[0])


def _tensors(part) -> tuple[Tensor, ...]:
    return part if isinstance(part, tuple) else (part,)


def test_digits_split_is_a_seeded_stratified_partition():
    from sklearn.datasets import load_digits

    task = create_task("digits")
    train_x, train_y = task.split["train"]
    val_x, val_y = task.split["val"]
    assert len(train_y) + len(val_y) == 1797
    assert abs(len(val_y) - 0.2 * 1797) < 10
    assert torch.bincount(val_y, minlength=10).min() >= 35  # every class is ~20% held out
    # together the two splits are the dataset with every image once: a partition
    every_row = sorted(map(tuple, torch.cat([train_x, val_x]).tolist()))
    assert every_row == sorted(map(tuple, load_digits().data.astype(int).tolist()))
    assert torch.equal(create_task("digits").split["val"][0], val_x)
    assert not torch.equal(create_task("digits", seed=1).split["val"][0], val_x)


def test_digits_patch_tokens_encode_quantised_pixels():
    pixel, patch = create_task("digits"), create_task("digits", tokens="patch")
    pixels = pixel.split["val"][0][0].reshape(8, 8)  # (8, 8)
    levels = pixels * 4 // 17
    top_left = (levels[0, 0] * 64 + levels[0, 1] * 16 + levels[1, 0] * 4 + levels[1, 1]).item()
    assert patch.split["val"][0][0, 0].item() == top_left
    assert patch.split["train"][0].max() < 256


@pytest.mark.parametrize("name", sorted(TASKS))
def test_batches_have_the_declared_shapes_and_vocabulary(name):
    task = small_task(name)
    inputs, targets = task.train_batch(5, torch.Generator().manual_seed(0))
    assert inputs.shape == (5, task.seq_len) and inputs.dtype == torch.int64
    assert 0 <= inputs.min() and inputs.max() < task.vocab_size
    if task.head == "classifier":
        assert targets.shape == (5,)
        assert 0 <= targets.min() and targets.max() < task.n_classes
    else:
        assert targets.shape == (5, task.seq_len)
        scored = targets[targets != -100]
        assert len(scored) and 0 <= scored.min() and scored.max() < task.vocab_size


@pytest.mark.parametrize("name", sorted(TASKS))
def test_adapted_config_builds_and_its_logits_fit_the_loss(name):
    task = small_task(name)
    config = tiny_config(task)
    assert (config.vocab_size, config.max_seq_len, config.head, config.n_classes) == (
        task.vocab_size,
        task.seq_len,
        task.head,
        task.n_classes,
    )
    inputs, targets = task.train_batch(3, torch.Generator().manual_seed(0))
    loss = task.loss(build_model(config)(inputs), targets)
    assert loss.shape == () and torch.isfinite(loss)
    metrics = task.evaluate(build_model(config))
    assert set(metrics) == {m.name for m in task.metrics}
    assert all(math.isfinite(value) for value in metrics.values())


def test_evaluate_restores_the_training_mode():
    task = small_task("digits")
    model = build_model(tiny_config(task))
    task.evaluate(model)
    assert model.training
    model.eval()
    task.evaluate(model)
    assert not model.training


def test_mqar_sequences_follow_the_zoology_layout():
    task = create_task("mqar", vocab_size=32, num_pairs=3, seq_len=10, num_train=50, num_val=50)
    inputs, targets = task.split["val"]
    keys, values = inputs[:, 0:6:2], inputs[:, 1:6:2]  # (N, 3)
    assert keys.max() <= 15 < values.min()  # disjoint halves of the vocabulary
    assert all(len(set(row)) == 3 for row in keys.tolist())
    queries = inputs[:, 6:9]  # (N, 3)
    assert torch.equal(queries.sort(dim=1).values, keys.sort(dim=1).values)
    assert (inputs[:, 9] == 0).all()  # padding
    for row in range(len(inputs)):
        answer = dict(zip(keys[row].tolist(), values[row].tolist(), strict=True))
        assert targets[row, 6:9].tolist() == [answer[k] for k in queries[row].tolist()]
    assert (targets[:, :6] == -100).all() and (targets[:, 9] == -100).all()
    assert not torch.equal(task.split["train"][0][:50], inputs)  # a different seed stream


def test_mqar_loss_and_accuracy_count_query_positions_only():
    task = create_task("mqar", vocab_size=16, num_pairs=2, seq_len=8, num_train=8, num_val=8)
    inputs, targets = task.split["val"]

    class Oracle(nn.Module):
        def forward(self, tokens):
            logits = torch.zeros(*tokens.shape, task.vocab_size)  # (B, T, V)
            answer = targets.clamp(min=0)
            return logits.scatter(-1, answer[..., None], 20.0)

    metrics = task.evaluate(Oracle())
    assert metrics["accuracy"] == 1.0 and metrics["loss"] < 1e-6


def test_digits_training_learns():
    task = small_task("digits")
    before, after = train(task, tiny_config(task), steps=120, batch_size=64, lr=3e-3)
    assert after["loss"] < before["loss"] - 1.0
    assert after["accuracy"] > 0.5  # chance is 0.1


def test_mqar_training_learns_recall():
    task = small_task("mqar")
    before, after = train(task, tiny_config(task, d_model=64), steps=300, batch_size=64, lr=1e-3)
    assert after["loss"] < before["loss"] - 1.0
    # chance is 1 / num_values; picking any value seen in the context gets 1 / num_pairs
    assert 1 / task.num_values < 1 / task.num_pairs < 0.5 < after["accuracy"]


def test_textlm_default_corpus_is_python_source():
    task = small_task("textlm")
    train_bytes, val_bytes = task.split["train"], task.split["val"]
    assert len(train_bytes) + len(val_bytes) == 200_000
    assert len(val_bytes) == 20_000  # the tenth of ten blocks, for a corpus under 640 KiB
    assert b"def " in bytes(train_bytes.tolist()) and b"import" in bytes(val_bytes.tolist())


def test_textlm_reads_a_file_or_a_folder(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_bytes(b"a" * 3000)
    (tmp_path / "b" / "c.txt").write_bytes(b"c" * 3000)
    folder = TextLM(path=str(tmp_path), seq_len=16)
    corpus = folder.corpus().tobytes()
    assert corpus == b"a" * 3000 + b"c" * 3000
    assert parse_task(folder.spec).corpus().tobytes() == corpus
    single = TextLM(path=tmp_path / "a.txt", seq_len=16)
    inputs, targets = single.train_batch(2, torch.Generator().manual_seed(0))
    assert (inputs == ord("a")).all() and (targets == ord("a")).all()


def test_textlm_bpb_is_loss_over_ln2():
    task = small_task("textlm")
    metrics = task.evaluate(build_model(tiny_config(task)))
    assert metrics["bpb"] == pytest.approx(metrics["loss"] / math.log(2))
    assert 7.5 < metrics["bpb"] < 8.5  # an untrained byte model is near uniform
    assert task.val_windows.shape == (task.eval_windows, task.seq_len + 1)


def test_textlm_rejects_an_empty_or_tiny_corpus(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "tiny.txt").write_bytes(b"x" * 100)
    with pytest.raises(ValueError, match="is empty"):
        TextLM(path=tmp_path / "empty.txt").train_batch(1, torch.Generator())
    with pytest.raises(ValueError, match="too few"):
        TextLM(path=tmp_path / "tiny.txt", seq_len=32).train_batch(1, torch.Generator())
