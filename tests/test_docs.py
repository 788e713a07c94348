"""The documentation: README.md and docs/ point only at files in the repository, stay short and
free of machine paths, docs/architecture.md says where new parts go, and the complete domain of
docs/plugins.md (docs/examples/points_domain.py) trains, samples and evaluates as a plugin."""

from __future__ import annotations

import json
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
POINTS = DOCS / "examples" / "points_domain.py"
# [text](target) and ![alt](target); the target ends at whitespace or ")"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# a commit hash: 7-40 hex digits with at least one letter and one digit
COMMIT = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def doc_files() -> list[Path]:
    """Every file a reader of the documentation reads: README.md and all of docs/."""
    return [README, *sorted(p for p in DOCS.rglob("*") if p.is_file() and "__pycache__" not in p.parts)]


def slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # no headings in code blocks
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+)$", text, flags=re.M)}


def links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code is not a link
    return LINK.findall(text)


def test_the_documentation_exists():
    names = {p.relative_to(ROOT).as_posix() for p in markdown_files()}
    assert {"README.md", "docs/architecture.md", "docs/plugins.md"} <= names
    for domain in ("audio", "image", "text", "molecules"):
        assert f"docs/domains/{domain}.md" in names


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_resolves_to_a_file_in_the_repository(path):
    found = links(path)
    for target in found:
        assert not re.match(r"^[a-z][a-z0-9+.-]*:", target), f"{path.name}: {target} leaves the repo"
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        assert dest.is_relative_to(ROOT), f"{path.name}: {target} points outside the repository"
        assert dest.exists(), f"{path.name}: {target} does not exist"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest), f"{path.name}: no heading #{anchor} in {dest.name}"


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_machine_paths_or_commit_hashes(path):
    text = path.read_text()
    for marker in ("/tmp/", "/work/", "/home/", "/root/"):
        assert marker not in text, f"{path.name} names a machine path ({marker})"
    assert not COMMIT.findall(text), f"{path.name}: commit hashes {COMMIT.findall(text)}"
    assert "DESIGN.md" not in text and "DATA.md" not in text  # pages that are not in the repo


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = README.read_text().splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines; move detail into docs/"
    top = "\n".join(lines[:30])
    assert "make demo" in top and "make test" in top
    targets = {target.partition("#")[0] for target in links(README)}
    assert "docs/architecture.md" in targets and "docs/plugins.md" in targets
    assert sum(t.startswith("benchmarks/results/") and t.endswith(".md") for t in targets) >= 5


def test_architecture_says_where_new_parts_go():
    text = (DOCS / "architecture.md").read_text()
    for where in ("core/samplers/", "core/schedules.py", "domains/<name>/", "commands.py",
                  "register_commands", "register_samplers", "register_schedules",
                  "register_domains", "core/app/", "plugins/hookspecs.py"):
        assert where in text, f"docs/architecture.md does not mention {where}"
    for seam in ("D(x, t, **cond)", "Domain", "runs/<domain>/<timestamp>/"):
        assert seam in text, f"docs/architecture.md does not describe {seam}"


# ---------------------------------------------------------------- the complete plugin domain
@pytest.fixture
def points_plugin(monkeypatch):
    """docs/examples/points_domain.py installed as a plugin: discovery sees the installed entry
    points plus `points = "points_domain"` (group "diffusekit"), imports the module and calls
    its `register_domains` hook, exactly as for a distribution that declares that entry point."""
    import diffusekit.plugins as plugins
    from diffusekit.plugins import manager

    installed = manager.find_entry_points()
    entry = metadata.EntryPoint("points", "points_domain", manager.ENTRY_POINT_GROUP)
    monkeypatch.delenv(manager.ENV_VAR, raising=False)
    monkeypatch.syspath_prepend(str(POINTS.parent))
    monkeypatch.setattr(manager, "find_entry_points",
                        lambda: sorted([*installed, entry], key=lambda e: e.name))
    plugins.reset()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP: more threads only oversubscribe a small machine
    yield
    torch.set_num_threads(threads)
    monkeypatch.undo()
    sys.modules.pop("points_domain", None)
    plugins.reset()  # the next user discovers the real plugins


def test_the_plugin_example_is_one_short_file():
    assert len(POINTS.read_text().splitlines()) <= 160


def test_points_domain_trains_samples_and_evaluates_as_a_plugin(points_plugin, toolkit, tmp_path):
    import diffusekit.plugins as plugins

    (record,) = [r for r in plugins.plugin_report() if r.name == "points"]
    assert record.status == "loaded" and dict(record.provides) == {"domains": ("points",)}
    code, out, err = toolkit("train", "--domain", "points", "trainer.max_steps=300",
                             "val_every=150", "checkpoint_every=150", "trainer.progress_bar=false")
    assert code == 0, err
    (run,) = (tmp_path / "runs" / "points").iterdir()
    assert "trained points to step 300" in out
    for name in ("config.yaml", "model.safetensors", "checkpoints/last.ckpt", "metrics.json"):
        assert (run / name).is_file(), name

    code, out, err = toolkit("sample", "--run", str(run), "-n", "200")
    assert code == 0, err
    rows = (run / "samples" / "dpmpp_2m-20" / "points.csv").read_text().splitlines()
    assert len(rows) == 200 and all(len(row.split(",")) == 2 for row in rows)

    code, out, err = toolkit("evaluate", "--run", str(run), "-n", "500")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())["evaluation"]["metrics"]
    # 300 steps already beat unit Gaussian noise scored the same way by a wide margin
    points = sys.modules["points_domain"]
    test_points = points.ring(500, 8, 2.0, 0.1, seed=2)
    noise = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    cfg = plugins.get_domain("points").default_config()
    floor = plugins.get_domain("points").evaluate({"x0": test_points}, noise, cfg)
    assert metrics["sw"] < 0.6 * floor["sw"], (metrics, floor)
    assert metrics["on_ring"] > 2 * floor["on_ring"], (metrics, floor)
