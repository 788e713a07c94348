"""Benchmark result records: the JSON every benchmark writes (the engine's and each domain's,
built-in or third party), and its Markdown beside it.

Every benchmark writes `benchmarks/results/<name>.json` with exactly the keys of `RECORD_KEYS`
(DESIGN.md, "Every benchmark writes ..."): what was run (`name`, `command`), on which code
(`commit`) and machine (`machine`), when (`date`), our numbers (`metrics`) and the other
systems' numbers (`baselines`). README's results table is built from these files, so the
schema is checked here (`check_record`) and in the tests.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any


def _checkout_root() -> Path:
    """The repository checkout this package runs from (an editable install), else the current
    directory (an installed copy writes its results where it is run)."""
    root = Path(__file__).resolve().parents[2]  # core/app/results.py -> the checkout
    return root if (root / "pyproject.toml").exists() and (root / "benchmarks").is_dir() else Path.cwd()


REPO_ROOT = _checkout_root()
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
RECORD_KEYS = ("name", "command", "commit", "machine", "date", "metrics", "baselines")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else `platform.processor()`, else "unknown CPU"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def usable_cores() -> int:
    """CPU cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_description() -> str:
    """E.g. "AMD EPYC, 2 cores, Linux-6.1-x86_64, Python 3.12.3", with ", GPU <name>" for each
    CUDA device torch sees."""
    gpus = "".join(f", GPU {name}" for name in gpu_names())
    return (f"{cpu_model()}, {usable_cores()} cores, {platform.system()}-{platform.release()}-"
            f"{platform.machine()}, Python {platform.python_version()}{gpus}")


def gpu_names() -> list[str]:
    """The names of the CUDA devices torch sees (none on a CPU-only machine)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


CODE = ("core", "domains", "plugins", "api", "benchmarks", ":(exclude)benchmarks/results",
        "pyproject.toml")  # git pathspecs of what a record's "-dirty" looks at


COMMIT_ENV = "DIFFUSEKIT_COMMIT"  # the commit of code that runs outside its checkout


def git_commit(repo: Path = REPO_ROOT) -> str:
    """`git rev-parse HEAD` of `repo`, with "-dirty" when tracked code differs from it (`CODE`:
    the engine, application, domains, plugins, benchmarks and pyproject.toml; records written
    into benchmarks/results/ by other runs do not count); "unknown" outside a git checkout.
    `$DIFFUSEKIT_COMMIT`, when set, is taken instead: the commit a copy of the code was built
    from, where it runs away from its checkout (a wheel installed on a GPU machine)."""
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                *CODE], cwd=repo, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


@contextlib.contextmanager
def commit_pinned() -> Iterator[str]:
    """Within the block, `git_commit` (so every record made) gives the commit of the code as it
    was when the block began: a benchmark that runs for an hour names the code it ran, not a
    commit made while it ran. Yields that commit."""
    previous = os.environ.get(COMMIT_ENV)
    commit = git_commit()
    os.environ[COMMIT_ENV] = commit
    try:
        yield commit
    finally:
        if previous is None:
            os.environ.pop(COMMIT_ENV, None)
        else:
            os.environ[COMMIT_ENV] = previous


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that produced a result, e.g. "python benchmarks/samplers.py --quick" or
    "toolkit benchmark --domain audio --quick": an installed command by its name and a script by
    its path in the checkout, so that the record names no folder of this machine."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return "python"
    program = Path(argv[0])
    if program.parent.name in ("bin", "Scripts"):  # a console script of the installed package
        return shlex.join([program.name, *argv[1:]])
    if program.is_absolute():
        try:
            program = program.resolve().relative_to(REPO_ROOT.resolve())
        except ValueError:
            program = Path(program.name)
    return shlex.join(["python", str(program), *argv[1:]])


def utc_now() -> str:
    """The current time, ISO 8601 in UTC to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _clean(value: Any) -> Any:
    """JSON-safe copy: tensors/numpy scalars to Python numbers, NaN/inf to None, tuples to lists."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def make_record(name: str, metrics: Mapping[str, Any], baselines: Mapping[str, Any],
                *, command: str | None = None) -> dict[str, Any]:
    """The result record with exactly `RECORD_KEYS`, filled in for this process and checkout."""
    record = {
        "name": name,
        "command": command_line() if command is None else command,
        "commit": git_commit(),
        "machine": machine_description(),
        "date": utc_now(),
        "metrics": _clean(metrics),
        "baselines": _clean(baselines),
    }
    check_record(record)
    return record


def check_record(record: Mapping[str, Any]) -> None:
    """Raise ValueError unless `record` has exactly `RECORD_KEYS`, with string metadata and
    dict metrics/baselines."""
    keys = tuple(record)
    if sorted(keys) != sorted(RECORD_KEYS):
        raise ValueError(f"result record keys {keys} != {RECORD_KEYS}")
    for key in ("name", "command", "commit", "machine", "date"):
        if not isinstance(record[key], str) or not record[key]:
            raise ValueError(f"result record field {key!r} must be a non-empty string")
    for key in ("metrics", "baselines"):
        if not isinstance(record[key], Mapping):
            raise ValueError(f"result record field {key!r} must be a dict")


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats to `digits` significant figures, None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 3) -> str:
    """A GitHub Markdown table; cells go through `fmt`."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c, digits) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_header(record: Mapping[str, Any], title: str) -> str:
    """The title plus the provenance lines (command, commit, machine, date) of a record."""
    return (f"# {title}\n\n"
            f"- command: `{record['command']}`\n- commit: `{record['commit']}`\n"
            f"- machine: {record['machine']}\n- date: {record['date']}\n")


def write_results(record: Mapping[str, Any], markdown_body: str, out_dir: Path = RESULTS_DIR,
                  title: str | None = None) -> tuple[Path, Path]:
    """Write `<out_dir>/<name>.json` and `<out_dir>/<name>.md` (provenance header + body);
    return both paths."""
    check_record(record)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{record['name']}.json"
    md_path = out_dir / f"{record['name']}.md"
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    md_path.write_text(markdown_header(record, title or record["name"]) + "\n" + markdown_body.rstrip() + "\n")
    return json_path, md_path


__all__ = [
    "RECORD_KEYS", "RESULTS_DIR", "REPO_ROOT", "machine_description", "gpu_names", "git_commit", "commit_pinned", "command_line",
    "utc_now", "make_record", "check_record", "fmt", "markdown_table", "markdown_header",
    "write_results",
]
