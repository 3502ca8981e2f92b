"""The bad-input corpus, parsed without a server: each case is refused the way the CLI reads it,
naming its field, with no exception other than SpecError. (tests/integration/test_bad_input_corpus.py
sends the same cases through the CLI and REST to a real server.)"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from trainyard.errors import SpecError
from trainyard.specs import load_yaml, parse_job_spec, parse_sweep_spec
from trainyard.specs.safe_yaml import decode_spec_bytes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "corpus"))
from corpus import load_cases, names_field  # noqa: E402

CASES = load_cases()


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", [c for c in CASES if not c.server_only], ids=lambda c: c.id)
def test_case_is_refused_naming_its_field(case):
    parse = parse_sweep_spec if case.kind == "sweep" else parse_job_spec
    with pytest.raises(SpecError) as info:
        parse(load_yaml(decode_spec_bytes(case.data, source=case.file), source=case.file), source=case.file)
    text = str(info.value)
    assert names_field(text, case.field), text
    if case.match:
        assert case.match in text, text
    for issue in info.value.issues:  # the error body must be valid JSON (no NaN, no huge ints)
        import json

        json.dumps(issue.to_dict(), allow_nan=False)


@pytest.mark.parametrize("case", [c for c in CASES if c.server_only], ids=lambda c: c.id)
def test_server_only_case_is_valid_on_its_own(case):
    """These pass local validation: only the server knows its clusters and storage roots."""
    parse = parse_sweep_spec if case.kind == "sweep" else parse_job_spec
    parse(load_yaml(decode_spec_bytes(case.data)))


@pytest.mark.parametrize("case_id", ["013-not-utf8", "014-utf16-with-bom", "008-deep-nesting-20000",
                                     "001-alias-billion-laughs", "051-seed-5000-digits", "012-description-one-megabyte"])
def test_cli_dry_run_exits_2_without_a_traceback(case_id, tmp_path, capsys):
    from trainyard.cli.main import main

    case = next(c for c in CASES if c.id == case_id)
    path = tmp_path / case.file
    path.write_bytes(case.data)
    assert main(["jobs", "submit", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert case.field in err and "Traceback" not in err
