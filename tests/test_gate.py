"""The validation gate: lenient defaults that a normal extract passes, strict files that stop a run.

The normal extract is tests/steward_extract.py: it has the contract's usual defects (among
them an active application missing from the mapping, APPLICATION_UNMAPPED), each with its
defined outcome, and 4 of 9 users and 4 of 10 habilitations rejected.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from pipelines.errors import EXIT_GATE, ConfigurationError, GateError
from tests.steward_extract import StewardRun, steward_run
from validation.gate import GateConfig, evaluate_gate, load_gate_config


@pytest.fixture(scope="module")
def steward() -> StewardRun:
    return steward_run()


def _gate_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gate.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _register(*rows: tuple[str, str, str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        [(entity, key, outcome, reason, "", None) for entity, key, outcome, reason in rows],
        columns=["entity", "legacy_key", "outcome", "reason_code", "detail", "merged_into"],
    )


def test_defaults_pass_a_normal_extract(steward: StewardRun) -> None:
    assert (steward.register["reason_code"] == "APPLICATION_UNMAPPED").any()  # a legitimate rejection
    result = evaluate_gate(steward.validated.counts, steward.register, load_gate_config(None))
    assert result.passed, result.message()
    assert result.breaches == ()
    result.raise_if_failed()  # does nothing


def test_defaults_as_shipped() -> None:
    config = load_gate_config(None)
    assert dict(config.max_rejected_share) == {"user": 0.5, "establishment": 0.5, "habilitation": 0.5}
    assert dict(config.max_reason_count) == {}
    assert config.stop_on_blocking_rules is False
    assert config.min_records_for_shares == 1000
    assert "gate_defaults.toml" in config.source


def test_shares_are_not_judged_on_a_small_extract(steward: StewardRun, tmp_path: Path) -> None:
    """44 % of 9 users rejected breaks a 1 % limit only when 9 records are enough to judge a share."""
    path = _gate_file(tmp_path, "min_records_for_shares = 10\n[max_rejected_share]\nuser = 0.01\n")
    assert evaluate_gate(steward.validated.counts, steward.register, load_gate_config(path)).passed
    path = _gate_file(tmp_path, "min_records_for_shares = 9\n[max_rejected_share]\nuser = 0.01\n")
    assert not evaluate_gate(steward.validated.counts, steward.register, load_gate_config(path)).passed


def test_strict_share_stops_the_run_and_says_by_how_much(steward: StewardRun, tmp_path: Path) -> None:
    path = _gate_file(tmp_path, "min_records_for_shares = 0\n[max_rejected_share]\nuser = 0.01\n")
    result = evaluate_gate(steward.validated.counts, steward.register, load_gate_config(path))
    assert not result.passed
    (breach,) = result.breaches
    assert breach.threshold == "max_rejected_share.user"
    assert breach.limit == 0.01
    assert breach.observed == pytest.approx(4 / 9)
    assert breach.excess == pytest.approx(4 / 9 - 0.01)
    assert breach.description == (
        "max_rejected_share.user: 4 of 9 user records rejected (44.4 %), above the limit of 1.0 % "
        "by 43.4 percentage points (4 records too many)"
    )
    with pytest.raises(GateError) as raised:
        result.raise_if_failed()
    assert raised.value.exit_code == EXIT_GATE == 3
    message = str(raised.value)
    assert str(path) in message
    assert "max_rejected_share.user" in message
    assert "44.4 %" in message
    assert "43.4 percentage points" in message


def test_reason_count_limit(steward: StewardRun, tmp_path: Path) -> None:
    path = _gate_file(tmp_path, "[max_reason_count.habilitation]\nAPPLICATION_UNMAPPED = 0\n"
                                "USER_REJECTED = 5\n")
    result = evaluate_gate(steward.validated.counts, steward.register, load_gate_config(path))
    assert [breach.threshold for breach in result.breaches] == ["max_reason_count.habilitation.APPLICATION_UNMAPPED"]
    assert result.breaches[0].description == (
        "max_reason_count.habilitation.APPLICATION_UNMAPPED: 1 habilitation records with reason "
        "APPLICATION_UNMAPPED, above the limit of 0 by 1"
    )


def test_stop_on_blocking_rules(steward: StewardRun, tmp_path: Path) -> None:
    path = _gate_file(tmp_path, "stop_on_blocking_rules = true\n")
    result = evaluate_gate(steward.validated.counts, steward.register, load_gate_config(path))
    assert not result.passed
    assert [b.threshold for b in result.breaches] == ["stop_on_blocking_rules"]
    assert "APPLICATION_UNMAPPED" in result.breaches[0].description


def test_a_file_overrides_the_defaults_key_by_key(tmp_path: Path) -> None:
    config = load_gate_config(_gate_file(tmp_path, "[max_rejected_share]\nhabilitation = 0.9\n"))
    assert dict(config.max_rejected_share) == {"user": 0.5, "establishment": 0.5, "habilitation": 0.9}


def test_limits_are_inclusive_and_empty_entities_pass() -> None:
    config = GateConfig(source="test", max_rejected_share={"user": 0.5, "establishment": 0.5})
    counts = {"user": {"source": 4, "rejected": 2}, "establishment": {"source": 0, "rejected": 0}}
    assert evaluate_gate(counts, _register(), config).passed


def test_several_breaches_are_all_reported() -> None:
    config = GateConfig(source="test", max_rejected_share={"user": 0.1},
                        max_reason_count={("user", "INVALID_EMAIL"): 1})
    register = _register(("user", "1", "rejected", "INVALID_EMAIL"), ("user", "2", "rejected", "INVALID_EMAIL"))
    result = evaluate_gate({"user": {"source": 10, "rejected": 2}}, register, config)
    assert [b.threshold for b in result.breaches] == ["max_rejected_share.user",
                                                       "max_reason_count.user.INVALID_EMAIL"]
    assert result.message().count("\n  - ") == 2
    json.dumps(result.to_dict())  # for the run's manifest
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.passed = True  # type: ignore[misc]


@pytest.mark.parametrize(("text", "named"), [
    ("[max_rejected_share]\nusers = 0.5\n", "max_rejected_share.users"),
    ("min_records_for_shares = -1\n", "min_records_for_shares"),
    ("max_rejected = 1\n", "max_rejected"),
    ("[max_rejected_share]\nuser = 1.5\n", "max_rejected_share.user"),
    ("[max_rejected_share]\nuser = 'half'\n", "max_rejected_share.user"),
    ("[max_reason_count.user]\nNOT_A_CODE = 1\n", "max_reason_count.user.NOT_A_CODE"),
    ("[max_reason_count.user]\nINVALID_EMAIL = -1\n", "max_reason_count.user.INVALID_EMAIL"),
    ("[max_reason_count.user]\nINVALID_EMAIL = 1.5\n", "max_reason_count.user.INVALID_EMAIL"),
    ("[max_reason_count.application]\nINVALID_EMAIL = 1\n", "max_reason_count.application.INVALID_EMAIL"),
    ("[max_reason_count]\nuser = 3\n", "max_reason_count.user"),
    ("stop_on_blocking_rules = 'yes'\n", "stop_on_blocking_rules"),
    ("max_rejected_share = 0.5\n", "max_rejected_share"),
    ("[max_rejected_share\nuser = 0.5\n", "not valid TOML"),
])
def test_bad_gate_files_are_configuration_errors(tmp_path: Path, text: str, named: str) -> None:
    path = _gate_file(tmp_path, text)
    with pytest.raises(ConfigurationError) as raised:
        load_gate_config(path)
    assert str(path) in str(raised.value)
    assert named in str(raised.value)


def test_missing_gate_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot be read"):
        load_gate_config(tmp_path / "absent.toml")
