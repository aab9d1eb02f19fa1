"""The transform's Handover: the extract's frames and the decisions given up to the transform are
let go of as soon as what needs them is made (the run's peak memory at scale), and the result is
the same as the transform's of the same inputs held by their caller."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pandas as pd
import pytest

from mappings.mapping import load_mapping
from pipelines import transform as transform_module
from pipelines.frames import TARGET_FRAME_COLUMNS
from pipelines.transform import Handover, transform
from pipelines.validate import ValidateConfig, ValidateResult, validate
from tests.legacy_builders import build_tables, to_frames
from tests.test_outcomes import APPLICATIONS, AS_OF, ESTABLISHMENTS, HABILITATIONS, USERS


def _inputs() -> tuple[Any, ValidateResult]:
    habilitations = [{"id_habilitation": key, **fields} for key, (fields, _, _) in HABILITATIONS.items()]
    frames = to_frames(build_tables(USERS, ESTABLISHMENTS, habilitations, APPLICATIONS))
    return frames, validate(frames, ValidateConfig(as_of=AS_OF, mapping=load_mapping(),
                                                   native_logins=("native@example.fr",)))


def test_a_handover_gives_the_transform_of_the_same_inputs() -> None:
    frames, validated = _inputs()
    expected = transform(frames, validated).target
    handed = transform(Handover(frames, validated.decisions)).target
    for table in TARGET_FRAME_COLUMNS:
        pd.testing.assert_frame_equal(handed.table(table), expected.table(table), check_exact=True)
    assert len(expected.exceptions)
    assert len(expected.entitlements)


def test_each_input_is_let_go_once_used(monkeypatch: pytest.MonkeyPatch) -> None:
    frames, validated = _inputs()
    decisions = validated.decisions
    watched = {
        "utilisateurs": weakref.ref(frames.utilisateurs),
        "etablissements": weakref.ref(frames.etablissements),
        "applications": weakref.ref(frames.applications),
        "habilitations": weakref.ref(frames.habilitations),
        "users decided": weakref.ref(decisions.users),
        "establishments decided": weakref.ref(decisions.establishments),
        "applications decided": weakref.ref(decisions.applications),
    }
    habilitations_decided = weakref.ref(decisions.habilitations)
    alive_when: dict[str, set[str]] = {}
    original_exceptions, original_access = transform_module._exceptions, transform_module._access

    def alive() -> set[str]:
        gc.collect()
        return {name for name, ref in watched.items() if ref() is not None}

    def exceptions(*args: Any) -> Any:
        alive_when["register"] = alive()
        return original_exceptions(*args)

    def access(*args: Any) -> Any:
        alive_when.setdefault("access", alive())
        return original_access(*args)

    monkeypatch.setattr(transform_module, "_exceptions", exceptions)
    monkeypatch.setattr(transform_module, "_access", access)
    handover = Handover(frames, decisions)
    del frames, validated, decisions  # the caller lets go: the handover holds them alone
    result = transform(handover)

    # The users' text goes once the accounts are made, before the register; every other input
    # but the decided habilitations is gone before the access rows are made.
    assert alive_when["register"] == set(watched) - {"utilisateurs"}
    assert alive_when["access"] == set()
    assert len(result.target.accounts)
    assert len(result.target.exceptions)
    del result
    gc.collect()
    assert habilitations_decided() is None  # nothing of the inputs outlives the transform
    with pytest.raises(ValueError, match="handed over to a transform already"):
        transform(handover)


def test_each_users_column_is_let_go_once_its_accounts_column_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    import mappings.normalize

    frames, validated = _inputs()
    watched = {name: weakref.ref(frames.utilisateurs[name].array)
               for name in ("courriel", "nom", "prenom", "telephone", "siret_rattachement")}
    alive_at_phones: set[str] = set()
    original_phones = mappings.normalize.phones_e164

    def phones(telephones: pd.Series) -> pd.Series:
        gc.collect()
        alive_at_phones.update(name for name, ref in watched.items() if ref() is not None)
        return original_phones(telephones)

    monkeypatch.setattr(mappings.normalize, "phones_e164", phones)
    monkeypatch.setattr(transform_module, "phones_e164", phones)
    handover = Handover(frames, validated.decisions)
    del frames, validated
    accounts = transform(handover).target.accounts

    # When the phones are made (last of the text), the emails, names and phones read are gone, and
    # the column the accounts never read went first.
    assert alive_at_phones == set()
    assert accounts["phone"].notna().any()
    assert accounts["last_name"].notna().any()


def test_a_transform_needs_the_decisions_with_the_frames() -> None:
    frames, _ = _inputs()
    with pytest.raises(TypeError, match="validation's result"):
        transform(frames)
