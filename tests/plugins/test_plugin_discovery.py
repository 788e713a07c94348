"""Plugin discovery through entry points, in fresh interpreters: the example plugin installed
from its own pyproject, the allow-list, broken plugins reported by name, unknown domains."""

from __future__ import annotations


def _records(seen: dict) -> dict[str, dict]:
    return {r["name"]: r for r in seen["report"]}


def test_example_plugin_found_through_its_entry_point(example_site, fake_site, discover, tmp_path):
    seen = discover(example_site, fake_site, cwd=tmp_path)
    records = _records(seen)

    assert "example" in seen["domains"]
    assert "midpoint" in seen["samplers"]  # found by the sampler registry's own lazy loader
    assert {"ddim", "dpmpp_2m"} <= set(seen["samplers"]) and "vp_cosine" in seen["schedules"]
    example = records["example"]
    assert example["status"] == "loaded" and example["error"] is None
    assert (example["distribution"], example["version"]) == ("diffusekit-example", "0.1.0")
    assert example["provides"] == {"domains": ["example"], "samplers": ["midpoint"]}
    # the engine's built-ins come through the same door, declared in the main pyproject.toml
    builtin = records["builtin"]
    assert builtin["status"] == "loaded" and builtin["distribution"] == "diffusekit"
    assert "dpmpp_2m" in builtin["provides"]["samplers"]
    assert "vp_cosine" in builtin["provides"]["schedules"]
    assert "midpoint" not in builtin["provides"]["samplers"]


def test_broken_plugins_are_reported_by_name_and_the_rest_still_load(
        example_site, fake_site, discover, tmp_path):
    seen = discover(example_site, fake_site, cwd=tmp_path)
    records = _records(seen)

    broken = records["broken"]
    assert broken["status"] == "failed" and broken["distribution"] == "broken-plugin"
    assert broken["error"] == "ImportError: broken_plugin needs the package 'frobnicate'"
    raising = records["raising"]
    assert raising["status"] == "failed"
    assert raising["error"] == "register_domains: RuntimeError: no licence for the weather data"
    typo = records["typo"]
    assert typo["status"] == "failed" and "unknown hook 'register_sampler'" in typo["error"]
    assert "register_samplers" in typo["error"]  # ... and the hooks that do exist
    # the example plugin loads beside the built-in domains (which register through the same hook)
    assert records["example"]["status"] == "loaded" and "example" in seen["domains"]
    assert [r["name"] for r in seen["report"]] == sorted(records)  # name order


def test_unknown_domain_lists_known_ones_closest_match_and_failed_plugins(
        example_site, fake_site, discover, tmp_path):
    kind, message = discover(example_site, fake_site, cwd=tmp_path)["unknown"]
    assert kind == "UnknownNameError"
    assert message.startswith("unknown domain 'exampel' (did you mean 'example'?); known: ")
    known = message.split("; known: ")[1].split(";")[0].split(", ")
    assert "example" in known and known == sorted(known)
    assert "plugins that failed to load: broken (ImportError:" in message


def test_allow_list_loads_only_the_named_plugins(example_site, fake_site, discover, tmp_path):
    seen = discover(example_site, fake_site, plugins_env=" example , nosuch", cwd=tmp_path)
    records = _records(seen)
    # the example plugin loads beside the built-in domains (which register through the same hook)
    assert records["example"]["status"] == "loaded" and "example" in seen["domains"]
    for name in ("builtin", "broken", "raising", "typo"):
        assert records[name]["status"] == "skipped" and records[name]["error"] is None
    assert records["nosuch"]["status"] == "failed"
    assert "not installed" in records["nosuch"]["error"]
    assert "midpoint" in seen["samplers"]


def test_empty_allow_list_loads_no_plugin(example_site, fake_site, discover, tmp_path):
    seen = discover(example_site, fake_site, plugins_env="", cwd=tmp_path)
    assert seen["domains"] == [] and "midpoint" not in seen["samplers"]
    assert {r["status"] for r in seen["report"]} == {"skipped"}
    assert "ddim" in seen["samplers"]  # the engine registers its own samplers regardless
    assert seen["unknown"][1] == "unknown domain 'exampel'; no domains are installed"
