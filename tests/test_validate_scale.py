"""The validation at scale keeps every failing record: keys from Great Expectations, values by key.

The engine asks Great Expectations for the failing keys only (the key is the row index) and
reads a failing record's values back from the facts by key (validation/evaluate.py). Great
Expectations caps its lists of unexpected *values* at 200 and its samples at 20: the extract
below has far more failures than that for several rules, under keys that are neither
contiguous nor in row order, and every one of them must reach the outcomes, the Data Docs
counts and the exceptions workbook.
"""

from __future__ import annotations

import datetime as dt
import gc
import re
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mappings.mapping import load_mapping
from pipelines.db import make_engine
from pipelines.frames import LEGACY_FRAME_COLUMNS, TEXT_DTYPE, LegacyFrames
from pipelines.transform import transform
from pipelines.validate import ValidateConfig, validate
from reports.exceptions_workbook import OFFENDING_COLUMN, offending_values_from, workbook_rows
from tests.legacy_builders import build_tables, default_applications, to_frames
from validation import facts as fact_builders
from validation.data_docs import write_data_docs
from validation.evaluate import RuleEngine, failing_records
from validation.rules import SUITES, rules_for

USERS = 1_500
AS_OF = dt.datetime(2025, 1, 1)


def _users() -> list[dict[str, object]]:
    rng = np.random.default_rng(7)
    ids = rng.permutation(np.arange(10_000, 10_000 + 7 * USERS, 7))  # sparse, shuffled keys
    users: list[dict[str, object]] = []
    for position, user_id in enumerate(ids.tolist()):
        user: dict[str, object] = {"id_utilisateur": user_id, "courriel": f"user{position}@example.fr"}
        if position % 5 == 0:
            user["statut"] = "SUPPRIME"  # 300 USER_DELETED
        elif position % 5 == 1:
            user["courriel"] = f"sans-arobase-{position}"  # 300 INVALID_EMAIL
        elif position % 5 == 2:
            user["courriel"] = f"Dup{position // 10}@Example.fr"  # pairs of DUPLICATE_LOGIN
        if position % 3 == 0:
            user["telephone"] = f"n/a {position}"  # 500 PHONE_DROPPED
        users.append(user)
    return users


@pytest.fixture(scope="module")
def run() -> tuple[RuleEngine, pd.DataFrame, pd.DataFrame]:
    frames = to_frames(build_tables(_users(), [], [], default_applications()))
    engine = RuleEngine()
    validated = validate(frames, ValidateConfig(as_of=AS_OF, mapping=load_mapping()), engine=engine)
    register = transform(frames, validated).target.exceptions
    return engine, fact_builders.user_facts(frames.utilisateurs), register


def _expected(facts: pd.DataFrame) -> dict[str, set[int]]:
    login_counts = facts.loc[facts["statut"].ne("SUPPRIME"), "login"].value_counts()
    return {
        "USER_DELETED": set(facts.loc[facts["statut"].eq("SUPPRIME"), "id_utilisateur"]),
        "INVALID_EMAIL": set(facts.loc[~facts["email"].fillna("").str.contains("@"), "id_utilisateur"]),
        "DUPLICATE_LOGIN": set(facts.loc[facts["statut"].ne("SUPPRIME")
                                         & facts["login"].map(login_counts).gt(1), "id_utilisateur"]),
        "PHONE_DROPPED": set(facts.loc[facts["telephone"].notna(), "id_utilisateur"]),
    }


def test_every_failing_key_beyond_great_expectations_caps(run: tuple[RuleEngine, pd.DataFrame, pd.DataFrame]) -> None:
    engine, facts, _register = run
    expected = _expected(facts)
    assert all(len(keys) > 200 for keys in expected.values())  # more than GX lists values for
    result = engine.results["users"]
    found: dict[str, set[int]] = {}
    for expectation_result in result.results:
        keys = expectation_result.result.get("unexpected_index_list") or []
        assert len(keys) == expectation_result.result["unexpected_count"]
        assert len(expectation_result.result.get("unexpected_list") or []) <= 200  # GX's own cap
        found.setdefault(expectation_result.expectation_config.meta["reason_code"], set()).update(keys)
    for reason_code, keys in expected.items():
        assert found[reason_code] == keys, reason_code


def test_failing_records_carry_the_values_of_their_key(run: tuple[RuleEngine, pd.DataFrame, pd.DataFrame]) -> None:
    engine, facts, _register = run
    by_key = facts.set_index("id_utilisateur")
    for expectation_result in engine.results["users"].results:
        records = failing_records(engine.results, "users", expectation_result)
        if not expectation_result.result.get("unexpected_count"):
            assert records is None
            continue
        assert records is not None
        column = expectation_result.expectation_config.kwargs["column"]
        assert list(records.columns) == [column, "id_utilisateur"]
        assert records["id_utilisateur"].tolist() == expectation_result.result["unexpected_index_list"]
        expected = by_key.loc[records["id_utilisateur"].tolist(), column]
        assert records[column].tolist() == expected.tolist() or (records[column].isna().all()
                                                                  and expected.isna().all())


def test_outcomes_follow_every_failure(run: tuple[RuleEngine, pd.DataFrame, pd.DataFrame]) -> None:
    _engine, facts, register = run
    expected = _expected(facts)
    # The phone is only dropped from the accounts that are migrated.
    expected["PHONE_DROPPED"] -= expected["USER_DELETED"] | expected["INVALID_EMAIL"] | expected["DUPLICATE_LOGIN"]
    users = register[register["entity"].eq("user")]
    for reason_code in ("USER_DELETED", "INVALID_EMAIL", "DUPLICATE_LOGIN", "PHONE_DROPPED"):
        listed = set(users.loc[users["reason_code"].eq(reason_code), "legacy_key"].astype(int))
        assert listed == expected[reason_code], reason_code


def test_the_workbook_names_every_offending_login(run: tuple[RuleEngine, pd.DataFrame, pd.DataFrame]) -> None:
    engine, facts, register = run
    rows = workbook_rows(register, offending_values_from(engine.results))
    duplicates = rows[rows["code motif"].eq("DUPLICATE_LOGIN")]
    assert len(duplicates) > 200
    logins = facts.set_index("id_utilisateur")["login"]
    for key, value in zip(duplicates["clé legacy"], duplicates[OFFENDING_COLUMN], strict=True):
        assert value == logins[int(key)]


def test_data_docs_count_every_failing_record(run: tuple[RuleEngine, pd.DataFrame, pd.DataFrame],
                                              tmp_path: Path) -> None:
    engine, facts, _register = run
    page = write_data_docs(engine, tmp_path).pages["users"].read_text(encoding="utf-8")
    deleted = len(_expected(facts)["USER_DELETED"])
    assert re.search(rf"SUPPRIME</div></td><td[^>]*><div[^>]*>{deleted}</div>", page)
    assert re.search(rf"\(masqué\)</div></td><td[^>]*><div[^>]*>{len(_expected(facts)['PHONE_DROPPED'])}</div>",
                     page)


def test_keys_must_be_unique() -> None:
    facts = pd.DataFrame({"code_application": ["A", "A"], "actif": [True, False]})
    with pytest.raises(ValueError, match="not unique"):
        RuleEngine().evaluate("application", facts, rules_for("application"), {"mapped_applications": ["A"]})


@pytest.mark.parametrize("dtype", ["str", object, "Int64"])
def test_lookups_once_per_distinct_value_are_map(dtype: str | type) -> None:
    values = ["a", "b", None, "c", "a"] if dtype != "Int64" else [1, 2, None, 3, 1]
    table_keys = ["a", "c", "z"] if dtype != "Int64" else [1, 3, 9]
    keys = pd.Series(values * 3, dtype=dtype, index=range(100, 115))
    table = pd.Series(["x", None, "y"], index=pd.Index(table_keys, dtype=dtype), dtype="str")
    pd.testing.assert_series_equal(fact_builders._lookup(keys, table), keys.map(table))
    if dtype == "str":
        upper = fact_builders._each_distinct(keys, lambda series: series.str.upper())
        pd.testing.assert_series_equal(upper, keys.str.upper())


def test_failing_values_need_the_engine_s_results(run: tuple[RuleEngine, pd.DataFrame, pd.DataFrame]) -> None:
    engine, _facts, _register = run
    with pytest.raises(ValueError, match=r"RuleEngine\.results"):
        offending_values_from(dict(engine.results))  # a plain copy has the keys but not the facts


def test_the_evaluated_facts_go_with_the_engine() -> None:
    """Great Expectations keeps its context for the whole process: nothing of what a suite ran on
    (the facts, its batch, the metrics it resolved) may stay there once the RuleEngine is dropped,
    or a run would carry the validation's memory through the load and the reconciliation."""
    frames = to_frames(build_tables(_users(), [], [], default_applications()))
    engine = RuleEngine()
    validated = validate(frames, ValidateConfig(as_of=AS_OF, mapping=load_mapping()), engine=engine)
    from great_expectations.execution_engine.pandas_batch_data import PandasBatchData

    evaluated = [weakref.ref(facts) for facts in engine.results.facts.values()]
    assert len(evaluated) == 5
    assert validated.counts["user"]["source"] == USERS
    # What stays for Data Docs and the workbook: the failing records' facts only.
    kept = engine.results.facts[SUITES["user"]]
    failing = set().union(*(result.result.get("unexpected_index_list") or ()
                            for result in engine.results[SUITES["user"]].results))
    assert set(kept.index) == failing
    assert 0 < len(kept) < USERS
    results = weakref.ref(engine.results)

    del engine, validated, kept
    gc.collect()

    assert results() is None
    assert [facts() for facts in evaluated] == [None] * 5
    batches = [o for o in gc.get_objects() if isinstance(o, PandasBatchData)]
    assert batches == [], "Great Expectations still holds the frames the suites ran on"


def test_the_users_facts_are_let_go_before_the_habilitation_suites(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the collector paused, as in a run, the users' facts (0.1 GB at a million users) are
    gone before the habilitation suites, the stage's peak, run: Great Expectations' validator held
    them in reference cycles until the end of the stage."""
    from pipelines.memory import gc_paused

    made: list[weakref.ref[pd.DataFrame]] = []
    user_facts = fact_builders.user_facts

    def recording(utilisateurs: pd.DataFrame) -> pd.DataFrame:
        facts = user_facts(utilisateurs)
        made.append(weakref.ref(facts))
        return facts

    monkeypatch.setattr(fact_builders, "user_facts", recording)
    engine = RuleEngine()
    evaluate = engine.evaluate
    alive_when: dict[str, bool] = {}

    def watching(suite_entity: str, facts: pd.DataFrame, *rest: object) -> object:
        alive_when[suite_entity] = bool(made) and made[0]() is not None
        return evaluate(suite_entity, facts, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "evaluate", watching)
    frames = to_frames(build_tables(_users(), [], [], default_applications()))
    with gc_paused():
        validate(frames, ValidateConfig(as_of=AS_OF, mapping=load_mapping()), engine=engine)
    assert alive_when["user"] is True
    assert alive_when["habilitation"] is False
    assert alive_when["habilitation_duplicate"] is False


def test_the_decided_habilitations_few_valued_columns_are_categories_of_the_same_values(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """States, codes, roles and outcomes are kept as categories (one byte a row: 340 MB less at a
    million users), from the facts on (the states, EFP codes, roles and SIRETs made there: 0.3 GB
    less through both habilitation suites); the decisions, the transform's frames and its register
    are those made on text."""
    from pipelines import validate as validate_module
    from pipelines.extract import ExtractConfig, extract
    from pipelines.generator import GenerateConfig, generate_legacy
    from validation import facts as facts_module

    generate_legacy(GenerateConfig(users=2000, seed=3, out=str(tmp_path / "legacy")))
    frames = extract(ExtractConfig(source=str(tmp_path / "legacy"))).frames
    # The extract's enumerations are categories too; the text run reads them as text.
    categorical = {table: [column for column in LEGACY_FRAME_COLUMNS[table]
                           if isinstance(frames.table(table)[column].dtype, pd.CategoricalDtype)]
                   for table in LEGACY_FRAME_COLUMNS}
    assert categorical["utilisateurs"] == ["type_compte", "statut"]
    assert categorical["habilitations"] == ["code_application", "siret", "role", "statut"]
    text_frames = LegacyFrames(**{table: frames.table(table).astype(dict.fromkeys(columns, TEXT_DTYPE))
                                  for table, columns in categorical.items()})
    config = ValidateConfig(as_of=AS_OF, mapping=load_mapping())
    compact_engine, text_engine = RuleEngine(), RuleEngine()
    compact = validate(frames, config, engine=compact_engine)
    monkeypatch.setattr(validate_module, "_few_valued_as_categories", lambda frame: frame)
    monkeypatch.setattr(facts_module, "_coded", lambda codes, values: pd.array(values, dtype="str").take(
        np.asarray(codes, dtype=np.intp), allow_fill=True))
    text = validate(text_frames, config, engine=text_engine)

    decided = compact.decisions.habilitations
    for column in (*validate_module.FEW_VALUED_HABILITATION_COLUMNS, "siret"):
        assert isinstance(decided[column].dtype, pd.CategoricalDtype), column
        assert not isinstance(text.decisions.habilitations[column].dtype, pd.CategoricalDtype), column
    assert decided["reason_code"].nunique() >= 8  # the generator's defects give many reasons
    assert decided["outcome"].eq("merged").any()  # DUPLICATE_ACCESS written into the categories
    pd.testing.assert_frame_equal(decided.astype(object), text.decisions.habilitations.astype(object))
    # Outcomes, reasons and kinds are categories from the start (of every value validate may
    # write), and end as those of their text: the categories the rows hold, sorted.
    for column in ("outcome", "reason_code", "kind"):
        assert decided[column].dtype == text.decisions.habilitations[column].astype("category").dtype, column
    assert compact.counts == text.counts
    # The duplicate suite ran on categories of kinds too: the same failing records to show.
    suite = SUITES["habilitation_duplicate"]
    duplicates = [[failing_records(engine.results, suite, result) for result in engine.results[suite].results]
                  for engine in (compact_engine, text_engine)]
    assert duplicates[0][0] is not None
    assert isinstance(compact_engine.results.facts[suite]["kind"].dtype, pd.CategoricalDtype)
    for made, expected in zip(*duplicates, strict=True):
        pd.testing.assert_frame_equal(made.astype(object), expected.astype(object))
    ours, theirs = transform(frames, compact).target, transform(text_frames, text).target
    pd.testing.assert_frame_equal(ours.exceptions, theirs.exceptions, obj="exceptions")
    # The accounts' type and status stay categories of the extract's enumerations.
    for column in ("account_type", "status"):
        assert isinstance(ours.accounts[column].dtype, pd.CategoricalDtype), column
    pd.testing.assert_frame_equal(ours.accounts.astype(object), theirs.accounts.astype(object), obj="accounts")
    # The access rows' codes, SIRETs and roles stay categories (0.1 GB less at a million users,
    # held through the load), of the values their rows hold; the same values as from text.
    few_valued = {"application_code": object, "siret": object, "role": object}
    for name in ("entitlements", "access_requests"):
        for column in few_valued:
            values = getattr(ours, name)[column]
            assert isinstance(values.dtype, pd.CategoricalDtype), (name, column)
            assert set(values.cat.categories) == set(values.dropna()), (name, column)
            assert not isinstance(getattr(theirs, name)[column].dtype, pd.CategoricalDtype), (name, column)
        assert len(getattr(ours, name)) > 100
        pd.testing.assert_frame_equal(getattr(ours, name).astype(few_valued), getattr(theirs, name).astype(few_valued),
                                      obj=name)

    # Loaded, after the round trip of `efp-migrate load` through the run folder, as from text.
    from pipelines.load import LoadConfig, load, read_target_state
    from pipelines.stage_store import load_stage, save_stage
    from pipelines.target_setup import init_target
    from pipelines.transform import TransformResult

    save_stage(tmp_path, "transform", TransformResult(target=ours, row_counts=ours.row_counts(), elapsed_seconds=0))
    stored = load_stage(tmp_path, "transform", for_stage="load").target
    assert isinstance(stored.entitlements["role"].dtype, pd.CategoricalDtype)
    states = []
    for name, target in (("categories", stored), ("text", theirs)):
        engine = make_engine(f"sqlite:///{tmp_path / name}.sqlite")
        try:
            init_target(engine)
            load(engine, target, LoadConfig(run_id="run-1"))
            states.append(read_target_state(engine))
        finally:
            engine.dispose()
    assert len(states[0]["entitlements"]) == len(ours.entitlements)
    for table in states[0]:
        pd.testing.assert_frame_equal(states[0][table], states[1][table], obj=table)


def test_the_decisions_keep_only_what_the_transform_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule engine's failing keys go once each suite is decided (56 MB at a million users), the
    users' normalised logins once the resolutions are applied (34 MB), and the decided habilitations
    keep only what the transform and its register read (the rules' states, the duplicate key and the
    copies of the extract's id and end date: 0.1 GB), all held through the transform: the target
    is the one made from decisions that keep every fact."""
    import dataclasses

    from pipelines import validate as validate_module
    from pipelines.extract import ExtractConfig, extract
    from pipelines.generator import GenerateConfig, generate_legacy

    generate_legacy(GenerateConfig(users=2000, seed=3, out=str(tmp_path / "legacy")))
    frames = extract(ExtractConfig(source=str(tmp_path / "legacy"))).frames
    config = ValidateConfig(as_of=AS_OF, mapping=load_mapping())
    lean = validate(frames, config)
    assert [field.name for field in dataclasses.fields(lean)] == ["decisions", "counts", "suites", "elapsed_seconds"]
    assert sorted(lean.suites) == sorted(SUITES.values())
    assert list(lean.decisions.users.columns) == ["outcome", "reason_code", "merged_into", "phone_dropped"]
    decided = lean.decisions.habilitations
    assert decided.index.name == "id_habilitation"
    assert list(decided.columns) == [*validate_module.DECIDED_HABILITATION_COLUMNS, "outcome", "reason_code",
                                     "merged_into"]

    monkeypatch.setattr(validate_module, "_decided_habilitations",
                        lambda facts: facts.set_index("id_habilitation", drop=False))
    full = validate(frames, config)
    assert {"id_habilitation", "holder_state", "siret_key", "date_fin"} <= set(full.decisions.habilitations.columns)
    assert lean.counts == full.counts
    ours, theirs = transform(frames, lean).target, transform(frames, full).target
    for table in dataclasses.fields(ours):
        pd.testing.assert_frame_equal(getattr(ours, table.name), getattr(theirs, table.name), obj=table.name)
    # The expired access's end date, read from the extract by id for its detail.
    expired = ours.exceptions[ours.exceptions["reason_code"].eq("EXPIRED")]
    assert len(expired) > 0
    ends = frames.habilitations.set_index("id_habilitation")["date_fin"]
    for key, detail in zip(expired["legacy_key"], expired["detail"], strict=True):
        assert detail == f"accès échu à la date d'arrêté (date_fin {ends[int(key)]})"


def test_a_habilitation_outcome_outside_the_categories_is_refused_not_made_missing() -> None:
    """The habilitations' outcome and reason codes: the earliest broken rule's, the same as
    first_failure's text; a rule whose reason is not among the categories is refused."""
    from pipelines.validate import HABILITATION_OUTCOMES, HABILITATION_REASON_CODES
    from validation.outcomes import MIGRATED, first_failure, first_failure_codes
    from validation.rules import rules_for

    rules = rules_for("habilitation")
    deciding = sorted((r for r in rules if r.outcome != "corrected"), key=lambda r: r.order)
    first, later = deciding[0], deciding[-1]
    keys = pd.Series([10, 20, 30])
    failures = {first.reason_code: frozenset({10}), later.reason_code: frozenset({10, 30})}
    outcome, reason = first_failure_codes(keys, rules, failures, HABILITATION_OUTCOMES, HABILITATION_REASON_CODES)
    outcomes = [HABILITATION_OUTCOMES[c] for c in outcome]
    reasons = [HABILITATION_REASON_CODES[c] if c >= 0 else None for c in reason]
    assert outcomes == [first.outcome, MIGRATED, later.outcome]
    assert reasons == [first.reason_code, None, later.reason_code]
    as_text = first_failure(keys, rules, failures)
    assert (as_text[0].tolist(), as_text[1].tolist()) == (outcomes, reasons)
    without_first = tuple(c for c in HABILITATION_REASON_CODES if c != first.reason_code)
    with pytest.raises(ValueError, match=first.reason_code):
        first_failure_codes(keys, rules, failures, HABILITATION_OUTCOMES, without_first)


def test_no_batch_fingerprint_is_computed_and_the_threshold_is_put_back(
        run: tuple[RuleEngine, pd.DataFrame, pd.DataFrame]) -> None:
    """Great Expectations' MD5 of each batch's frame (a Data Docs marker, 2.4 s of the validation
    at a million users) is not computed for any suite, and its threshold is its own again after."""
    from great_expectations.execution_engine import pandas_execution_engine

    engine, _facts, _register = run
    assert engine.results  # every suite of the extract ran
    for suite, result in engine.results.items():
        markers = result.meta["batch_markers"]
        assert "pandas_data_fingerprint" not in markers, suite
        assert "ge_load_time" in markers, suite  # the markers are there, only the fingerprint is not
    assert pandas_execution_engine.HASH_THRESHOLD == 1e9
