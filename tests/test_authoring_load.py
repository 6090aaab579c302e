"""Multi-file rules: folders, includes, precedence, and every error at once."""

from __future__ import annotations

import pytest

from hydraguard.policy import PolicyError, load_policy, parse_policy


def errors_of(*paths) -> list[str]:
    with pytest.raises(PolicyError) as e:
        load_policy(list(paths))
    return [str(i) for i in e.value.issues]


def write(d, name, text):
    p = d / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_folder_loads_yaml_files_in_name_order(tmp_path):
    write(tmp_path, "20-b.yaml", "version: 1\nrules:\n  - {id: b, action: deny}\n")
    write(tmp_path, "10-a.yaml",
          "version: 1\nsettings: {bad_body: pass}\nrules:\n  - {id: a, action: allow}\n")
    write(tmp_path, "notes.txt", "not rules")
    write(tmp_path, "sub/30-c.yaml", "version: 1\nrules:\n  - {id: c, action: deny}\n")
    p = load_policy(tmp_path)
    assert [r.id for r in p.rules] == ["a", "b"]
    assert p.settings.bad_body == "pass"
    assert [s.rsplit("/", 1)[-1] for s in p.sources] == ["10-a.yaml", "20-b.yaml"]


def test_include_is_loaded_right_after_the_including_file(tmp_path):
    write(tmp_path, "main.yaml",
          "version: 1\ninclude: [more.yaml, d/]\nrules:\n  - {id: main, action: deny}\n")
    write(tmp_path, "more.yaml", "version: 1\nrules:\n  - {id: more, action: deny}\n")
    write(tmp_path, "d/1.yaml", "version: 1\nrules:\n  - {id: d1, action: deny}\n")
    write(tmp_path, "last.yaml", "version: 1\nrules:\n  - {id: last, action: deny}\n")
    p = load_policy([tmp_path / "main.yaml", tmp_path / "last.yaml"])
    assert [r.id for r in p.rules] == ["main", "more", "d1", "last"]


def test_sections_defined_once_ids_unique_across_files_all_errors_together(tmp_path):
    a = write(tmp_path, "a.yaml", "version: 1\nsettings: {}\nrules:\n  - {id: x, action: deny}\n")
    b = write(tmp_path, "b.yaml",
              "version: 1\n"
              "settings: {bad_body: pass}\n"
              "rules:\n"
              "  - {id: x, action: dney}\n"
              "  - {id: y, action: allow, sadow: true}\n")
    assert errors_of(a, b) == [
        f"{b}:2:1: settings: defined again (first at {a}:2:1); only `rules` may be split "
        "over several files",
        f"{b}:4:6: rules: duplicate rule id 'x' (first at {a}:4:6)",
        f"{b}:4:21: rules[0].action: 'dney' is not one of: allow, deny, throttle "
        "(did you mean \"deny\"?)",
        f"{b}:5:28: rules[1]: unknown key 'sadow' (did you mean \"shadow\"?)",
    ]


def test_duplicate_id_reported_with_schema_errors_in_one_file():
    text = ("setings: {}\n"
            "rules:\n"
            "  - {id: a, action: deny}\n"
            "  - {id: a, action: nope}\n")
    with pytest.raises(PolicyError) as e:
        parse_policy(text, "r.yaml")
    assert [str(i) for i in e.value.issues] == [
        "r.yaml:1:1: top level: unknown key 'setings' (did you mean \"settings\"?)",
        "r.yaml:4:6: rules: duplicate rule id 'a' (first at line 3)",
        "r.yaml:4:21: rules[1].action: 'nope' is not one of: allow, deny, throttle",
    ]


def test_include_problems(tmp_path):
    m = write(tmp_path, "m.yaml", "version: 1\ninclude: [gone.yaml, m.yaml]\n")
    assert errors_of(m) == [
        f"{m}:2:11: include: 'gone.yaml' not found ({tmp_path / 'gone.yaml'})",
        f"{m}:2:22: {tmp_path / 'm.yaml'} is loaded twice",
    ]


def test_empty_folder_and_missing_path(tmp_path):
    (tmp_path / "empty").mkdir()
    assert errors_of(tmp_path / "empty", tmp_path / "nope.yaml") == [
        f"{tmp_path / 'empty'}:1:1: no *.yaml rules files in folder {tmp_path / 'empty'}",
        f"{tmp_path / 'nope.yaml'}:1:1: cannot read rules file: no such file or folder",
    ]


def test_geoip_paths_relative_to_the_defining_file(tmp_path):
    write(tmp_path, "main.yaml", "version: 1\ninclude: [sub/geo.yaml]\n")
    write(tmp_path, "sub/geo.yaml", "version: 1\ngeoip: {location: ../x.mmdb, optional: true}\n")
    p = load_policy(tmp_path / "main.yaml")
    assert p.geoip.paths == (("location", str((tmp_path / "x.mmdb").resolve())),)
