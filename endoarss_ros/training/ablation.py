"""``endoarss ablation SPEC.yaml``: train and test every row of an ablation, write the table.

A spec names a base training config and rows, each a set of overrides of it; every row gets
the same data, schedule, seed(s) and therefore the same budget (images seen). Each row is
trained with model selection on the validation split, and its best checkpoint is evaluated
on the held-out test split. The table reports the test metrics and Δm, the mean relative
change against the single-task rows (higher is better)::

    name: ...
    description: ...            # text placed above the table
    base: train_ablation.yaml   # path relative to the spec (or an inline mapping)
    seeds: [0]
    baselines: {activity: single-task activity, segmentation: single-task segmentation}
    rows:
      - name: single-task activity
        set: {loss.tasks: [activity], model.overrides.tesla.enabled: false}

The table is written between ``<!-- ablation:begin -->`` and ``<!-- ablation:end -->`` of the
Markdown file (the rest of the file is kept), or as a new file.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BEGIN = "<!-- ablation:begin -->"
END = "<!-- ablation:end -->"
PRIMARY = {"activity": "activity_accuracy", "segmentation": "segmentation_miou"}
COLUMNS = (
    ("activity_accuracy", "act. acc."),
    ("activity_macro_f1", "act. macro-F1"),
    ("segmentation_miou", "seg. mIoU"),
    ("segmentation_miou_no_background", "seg. mIoU (no bg)"),
    ("segmentation_mean_dice", "seg. mean Dice"),
)


class AblationSpecError(ValueError):
    """The ablation spec is malformed; the message names the entry."""


@dataclass(frozen=True)
class AblationRow:
    name: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class AblationSpec:
    name: str
    description: str
    base: dict[str, Any]
    rows: tuple[AblationRow, ...]
    seeds: tuple[int, ...]
    baselines: dict[str, str]


@dataclass
class RowResult:
    """Test metrics of one row, per seed, and what it cost."""

    name: str
    tasks: tuple[str, ...]
    tesla: bool
    sma: bool
    trainable_parameters: int
    metrics: list[dict[str, float]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    images_per_second: list[float] = field(default_factory=list)

    def mean(self, key: str) -> float | None:
        values = [m[key] for m in self.metrics if key in m and not math.isnan(m[key])]
        return statistics.fmean(values) if values else None

    def std(self, key: str) -> float | None:
        values = [m[key] for m in self.metrics if key in m and not math.isnan(m[key])]
        return statistics.stdev(values) if len(values) > 1 else None


def _flatten(prefix: str, value: Any) -> list[str]:
    """``{"a": {"b": 1}}`` -> ``["a.b=1"]`` (YAML-encoded values), keys joined by dots."""
    if isinstance(value, dict) and value:
        out: list[str] = []
        for key, child in value.items():
            out.extend(_flatten(f"{prefix}.{key}" if prefix else str(key), child))
        return out
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    text = text.removesuffix("\n...").strip()
    return [f"{prefix}={text}"]


def load_spec(path: str | Path) -> AblationSpec:
    from endoarss_ros.training.config import deep_merge

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise AblationSpecError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise AblationSpecError(f"{path}: the spec must be a mapping")
    known = {"name", "description", "base", "rows", "seeds", "baselines"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise AblationSpecError(f"{path}: unknown field(s) {unknown} (known: {sorted(known)})")
    base = data.get("base")
    if isinstance(base, str):
        base_path = (path.parent / base).resolve()
        try:
            base = yaml.safe_load(base_path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise AblationSpecError(f"{path}: base {base_path}: {exc}") from exc
    if not isinstance(base, dict):
        raise AblationSpecError(f"{path}: base must be a config mapping or a YAML path")
    rows_data = data.get("rows")
    if not isinstance(rows_data, list) or not rows_data:
        raise AblationSpecError(f"{path}: rows must be a non-empty list")
    rows = []
    for index, row in enumerate(rows_data):
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            raise AblationSpecError(f"{path}: rows[{index}] needs a name")
        if set(row) - {"name", "set"}:
            raise AblationSpecError(f"{path}: rows[{index}] may only have 'name' and 'set'")
        overrides = row.get("set") or {}
        if not isinstance(overrides, dict):
            raise AblationSpecError(f"{path}: rows[{index}].set must be a mapping")
        rows.append(AblationRow(row["name"], tuple(_flatten("", overrides))))
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise AblationSpecError(f"{path}: row names must be unique")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise AblationSpecError(f"{path}: seeds must be a non-empty list of integers")
    baselines = data.get("baselines") or {}
    if not isinstance(baselines, dict) or any(v not in names for v in baselines.values()):
        raise AblationSpecError(f"{path}: baselines must map task names to row names")
    return AblationSpec(
        name=str(data.get("name", path.stem)),
        description=str(data.get("description", "")).strip(),
        base=deep_merge({}, base),
        rows=tuple(rows),
        seeds=tuple(seeds),
        baselines=dict(baselines),
    )


def delta_m(row: RowResult, baselines: dict[str, RowResult]) -> float | None:
    """Mean over tasks of the relative change (in %) of the primary metric against the
    single-task row of that task; None unless the row and every baseline have the metric."""
    changes = []
    for task, baseline in baselines.items():
        metric = PRIMARY[task]
        ours, reference = row.mean(metric), baseline.mean(metric)
        if ours is None or reference is None or reference == 0:
            return None
        changes.append((ours - reference) / reference)
    return 100.0 * statistics.fmean(changes) if changes else None


def markdown_table(
    spec: AblationSpec,
    results: list[RowResult],
    settings: dict[str, Any],
    command: str,
) -> str:
    baselines = {t: next(r for r in results if r.name == n) for t, n in spec.baselines.items()}
    lines = [f"### {spec.name}", ""]
    if spec.description:
        lines += [spec.description, ""]
    for key, value in settings.items():
        lines.append(f"- {key}: {value}")
    lines += [
        f"- regenerate: `{command}`",
        "",
        "| row | tasks | TESLA | SMA | trainable params | "
        + " | ".join(label for _, label in COLUMNS)
        + " | Δm (%) | run s |",
        "|---|---|:-:|:-:|---:|" + "---:|" * len(COLUMNS) + "---:|---:|",
    ]
    for row in results:
        cells = []
        for key, _ in COLUMNS:
            mean, std = row.mean(key), row.std(key)
            if mean is None:
                cells.append("-")
            elif std is None:
                cells.append(f"{mean:.3f}")
            else:
                cells.append(f"{mean:.3f} ± {std:.3f}")
        dm = delta_m(row, baselines) if len(row.tasks) > 1 else None
        lines.append(
            f"| {row.name} | {'+'.join(t[:3] for t in row.tasks)} | "
            f"{'yes' if row.tesla else 'no'} | {'yes' if row.sma else 'no'} | "
            f"{row.trainable_parameters:,} | "
            + " | ".join(cells)
            + f" | {'-' if dm is None else f'{dm:+.1f}'} | {statistics.fmean(row.seconds):.0f} |"
        )
    lines += [
        "",
        "Metrics are on the held-out test split (never used for model selection), mean over "
        "seeds (± sample standard deviation when there are several). mIoU includes the "
        "background class unless marked; Δm is the mean over tasks of the relative change of "
        "activity accuracy and segmentation mIoU against the single-task rows. "
        "Run s: wall-clock seconds of one run (training with its validation passes, and the "
        "test evaluation).",
    ]
    return "\n".join(lines) + "\n"


def write_table(path: Path, table: str) -> None:
    """Replace the marked block of ``path`` (or create the file with just the block)."""
    block = f"{BEGIN}\n{table}{END}\n"
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            path.write_text(head + block + tail.lstrip("\n"), encoding="utf-8")
            return
        path.write_text(text.rstrip("\n") + "\n\n" + block, encoding="utf-8")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(block, encoding="utf-8")


@dataclass(frozen=True)
class RunOutcome:
    """One (row, seed) training run: its test metrics and costs."""

    row: str
    seed: int
    tasks: tuple[str, ...]
    tesla: bool
    sma: bool
    trainable_parameters: int
    metrics: dict[str, float]
    seconds: float
    images_per_second: float
    settings: dict[str, Any]


_SPLITS_CACHE: dict[Any, Any] = {}


def run_one(
    base: dict[str, Any],
    row: AblationRow,
    seed: int,
    out_dir: Path,
    extra: list[str],
    progress: bool,
) -> RunOutcome:
    """Train one row with one seed, select on validation, evaluate on the test split."""
    from endoarss_ros.metrics import headline
    from endoarss_ros.training.config import load_train_config
    from endoarss_ros.training.data import build_splits
    from endoarss_ros.training.evaluation import evaluate_checkpoint
    from endoarss_ros.training.trainer import Trainer

    slug = "".join(c if c.isalnum() else "_" for c in row.name.lower()).strip("_")
    overrides = [
        *extra,
        *row.overrides,
        f"seed={seed}",
        f"output_dir={out_dir / f'{slug}_seed{seed}'}",
        f"logging.progress={'true' if progress else 'false'}",
    ]
    config = load_train_config(None, overrides, base=base)
    key = (repr(config.data), config.model.input_size, seed)
    if key not in _SPLITS_CACHE:
        _SPLITS_CACHE.clear()
        _SPLITS_CACHE[key] = build_splits(config.data, config.model.input_size, seed)
    splits = _SPLITS_CACHE[key]
    started = time.perf_counter()
    trainer = Trainer(config, splits=splits)
    fit = trainer.fit()
    evaluation = evaluate_checkpoint(
        fit.best_checkpoint,
        config.data,
        config.data.test_split,
        device=trainer.device,
        batch_size=config.optim.batch_size,
        examples=0,
    )
    metrics = headline(evaluation.metrics)
    print(
        f"{row.name} (seed {seed}): "
        + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        + f"; {fit.train_images_per_second:.0f} img/s",
        flush=True,
    )
    return RunOutcome(
        row=row.name,
        seed=seed,
        tasks=config.loss.tasks,
        # The released network (model.architecture: official) has no TESLA and no SMA in the
        # heads: its SMA is a frozen front end, reported as "no".
        tesla=bool(getattr(getattr(trainer.model.config, "tesla", None), "enabled", False)),
        sma=bool(getattr(getattr(trainer.model.config, "sma", None), "enabled", False)),
        trainable_parameters=sum(p.numel() for p in trainer.params),
        metrics=metrics,
        seconds=time.perf_counter() - started,
        images_per_second=fit.train_images_per_second,
        settings=_settings(config, splits),
    )


def run_ablation(
    spec: AblationSpec,
    out_dir: Path,
    extra_overrides: list[str] | None = None,
    progress: bool = False,
    jobs: int = 1,
    spec_path: Path | None = None,
) -> tuple[list[RowResult], dict[str, Any]]:
    """Train and test every row for every seed; returns the rows in spec order and the shared
    settings. With ``jobs`` above 1 (and the spec's file), runs go to ``jobs`` child
    processes at a time (``endoarss ablation SPEC --run ROW:SEED``), each writing its outcome
    as JSON."""
    extra = list(extra_overrides or [])
    tasks = [(index, seed) for index in range(len(spec.rows)) for seed in spec.seeds]
    if jobs <= 1 or spec_path is None:
        outcomes = [
            run_one(spec.base, spec.rows[i], seed, out_dir, extra, progress) for i, seed in tasks
        ]
    else:
        outcomes = _run_in_children(spec_path, tasks, out_dir, extra, progress, jobs)
    results: list[RowResult] = []
    for row in spec.rows:
        mine = [o for o in outcomes if o.row == row.name]
        first = mine[0]
        results.append(
            RowResult(
                name=row.name,
                tasks=first.tasks,
                tesla=first.tesla,
                sma=first.sma,
                trainable_parameters=first.trainable_parameters,
                metrics=[o.metrics for o in mine],
                seconds=[o.seconds for o in mine],
                images_per_second=[o.images_per_second for o in mine],
            )
        )
    settings = dict(outcomes[0].settings)
    settings["budget (every row)"] += f", seeds {list(spec.seeds)}"
    if jobs > 1:
        settings["parallel runs"] = jobs
    return results, settings


def _run_in_children(
    spec_path: Path,
    tasks: list[tuple[int, int]],
    out_dir: Path,
    extra: list[str],
    progress: bool,
    jobs: int,
) -> list[RunOutcome]:
    import subprocess

    out_dir.mkdir(parents=True, exist_ok=True)
    pending = list(tasks)
    running: list[tuple[subprocess.Popen[bytes], Path, tuple[int, int]]] = []
    finished: dict[tuple[int, int], RunOutcome] = {}
    while pending or running:
        while pending and len(running) < jobs:
            index, seed = pending.pop(0)
            outcome_path = out_dir / f".outcome_{index}_{seed}.json"
            outcome_path.unlink(missing_ok=True)
            command = [
                sys.executable,
                "-m",
                "endoarss_ros.cli",
                "ablation",
                str(spec_path),
                "--out",
                str(out_dir),
                "--run",
                f"{index}:{seed}",
                "--outcome",
                str(outcome_path),
            ]
            command += [f"--set={o}" for o in extra]
            if progress:
                command.append("--progress")
            running.append((subprocess.Popen(command), outcome_path, (index, seed)))
        time.sleep(0.5)
        for entry in list(running):
            process, outcome_path, key = entry
            if process.poll() is None:
                continue
            running.remove(entry)
            if process.returncode != 0:
                for other, _, _ in running:
                    other.terminate()
                raise RuntimeError(f"ablation run {key} failed with exit code {process.returncode}")
            finished[key] = outcome_from_json(json.loads(outcome_path.read_text(encoding="utf-8")))
            outcome_path.unlink()
    return [finished[key] for key in tasks]


def outcome_from_json(data: dict[str, Any]) -> RunOutcome:
    data = dict(data)
    data["tasks"] = tuple(data["tasks"])
    return RunOutcome(**data)


def _settings(config: Any, splits: Any) -> dict[str, Any]:
    data = config.data
    if data.source == "synthetic":
        s = data.synthetic
        frames = (
            f"synthetic, rendered at {s.image_size[0]}x{s.image_size[1]}: {s.train_frames} "
            f"train / {s.val_frames} validation / {s.test_frames} test frames"
        )
    else:
        frames = f"{data.source} at {data.root}: {splits.description}"
    optim = config.optim
    return {
        "data": frames,
        "model": (
            f"{config.model.preset} at {config.model.input_size[0]}x{config.model.input_size[1]}"
            + (", whole backbone trained" if config.model.train_backbone else ", frozen backbone")
        ),
        "budget (every row)": (
            f"{optim.epochs} epochs x {splits.description['train_frames']} frames, batch "
            f"{optim.batch_size}, {optim.optimizer} lr {optim.lr:g} ({optim.scheduler}), "
            f"weighting {config.loss.weighting}"
        ),
    }


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", type=Path, help="ablation spec (YAML)")
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"), help="run folders")
    parser.add_argument("--table", type=Path, default=None, help="Markdown file for the table")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a value of the base config for every row (repeatable)",
    )
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs trained at once, one process each (1)"
    )
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--outcome", type=Path, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from endoarss_ros.training.config import TrainConfigError

    if args.run is not None:
        return _run_child(args)
    try:
        spec = load_spec(args.spec)
        results, settings = run_ablation(
            spec, args.out, args.overrides, args.progress, max(1, args.jobs), args.spec
        )
    except (AblationSpecError, TrainConfigError, RuntimeError) as exc:
        print(f"endoarss ablation: {exc}", file=sys.stderr)
        return 2
    command = f"endoarss ablation {args.spec}" + "".join(f" --set {o}" for o in args.overrides)
    if args.table is not None:
        command += f" --table {args.table}"
    table = markdown_table(spec, results, settings, command)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.json").write_text(
        json.dumps(
            {
                "spec": spec.name,
                "settings": settings,
                "rows": [
                    {
                        "name": r.name,
                        "tasks": list(r.tasks),
                        "tesla": r.tesla,
                        "sma": r.sma,
                        "trainable_parameters": r.trainable_parameters,
                        "test_metrics": r.metrics,
                        "train_seconds": r.seconds,
                        "train_images_per_second": r.images_per_second,
                    }
                    for r in results
                ],
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    (args.out / "ablation.md").write_text(table, encoding="utf-8")
    if args.table is not None:
        write_table(args.table, table)
    print(table)
    return 0


def _run_child(args: argparse.Namespace) -> int:
    """One (row, seed) run in a child process of ``--jobs``; writes its outcome JSON."""
    import dataclasses

    spec = load_spec(args.spec)
    index, seed = (int(v) for v in args.run.split(":"))
    outcome = run_one(spec.base, spec.rows[index], seed, args.out, args.overrides, args.progress)
    args.outcome.write_text(json.dumps(dataclasses.asdict(outcome)), encoding="utf-8")
    return 0
