"""Facts frames: each entity's legacy columns normalised, plus lookups of other entities' outcomes.

The rules of validation/rules.py are evaluated on these frames. Building a fact is
normalising or looking up, never deciding: every decision comes from the rule evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from mappings.mapping import Mapping
from mappings.normalize import clean_name, email_of, login_of, siret_digits

MIGRATED = "migrated"


def _blank_to_na(series: pd.Series) -> pd.Series:
    return series.mask(series.str.len() == 0)


def user_facts(utilisateurs: pd.DataFrame) -> pd.DataFrame:
    # Columns are passed as arrays (see habilitation_facts).
    return pd.DataFrame(
        {
            "id_utilisateur": utilisateurs["id_utilisateur"].array,
            "statut": utilisateurs["statut"].array,
            "type_compte": utilisateurs["type_compte"].array,
            "email": _as_text(_blank_to_na(email_of(utilisateurs["courriel"]))),
            "login": _as_text(login_of(utilisateurs["courriel"])),
            "last_name": _as_text(_blank_to_na(clean_name(utilisateurs["nom"]))),
            "first_name": _as_text(_blank_to_na(clean_name(utilisateurs["prenom"]))),
            "telephone": _as_text(_blank_to_na(utilisateurs["telephone"].str.strip())),
        },
        copy=False,  # as habilitation_facts
    )


def establishment_facts(etablissements: pd.DataFrame) -> pd.DataFrame:
    digits = _blank_to_na(siret_digits(etablissements["siret"]))
    return pd.DataFrame(
        {
            "row_number": range(len(etablissements)),
            "siret_digits": _as_text(digits),
            "siren_digits": _as_text(_blank_to_na(siret_digits(etablissements["siren"]))),
            "siren_of_siret": _as_text(digits.str.slice(0, 9)),
            "is_closed": etablissements["date_fermeture"].notna().to_numpy(),
        }
    )


def application_facts(applications: pd.DataFrame) -> pd.DataFrame:
    # One record per legacy code: a code listed twice is one application (the first row wins).
    unique = applications.drop_duplicates("code_application", keep="first")
    return pd.DataFrame(
        {
            "code_application": unique["code_application"].to_numpy(),
            "actif": unique["actif"].astype(bool).to_numpy(),
        }
    )


def habilitation_facts(
    habilitations: pd.DataFrame,
    user_decisions: pd.DataFrame,
    user_types: pd.Series,
    application_decisions: pd.DataFrame,
    establishment_decisions: pd.DataFrame,
    mapping: Mapping,
) -> pd.DataFrame:
    """One row per habilitation, with the state of its holder, application and establishment.

    `user_decisions` is indexed by id_utilisateur with columns outcome, merged_into;
    `application_decisions` by legacy code with outcome, reason_code, efp_code;
    `establishment_decisions` by normalised SIRET with outcome.

    Millions of rows share a few thousand codes and SIRETs: lookups and normalisations are done
    once per distinct value (`_lookup`, `_each_distinct`).
    """
    holder = habilitations["id_utilisateur"]
    merged_into = _lookup(holder, user_decisions["merged_into"])
    holder_id = merged_into.fillna(holder).astype("int64")
    del merged_into
    effective_outcome = _lookup(holder_id, user_decisions["outcome"])
    original_outcome = _lookup(holder, user_decisions["outcome"])
    holder_state = _states(  # later conditions win, as successive assignments would
        ("rejected", effective_outcome.ne(MIGRATED) & effective_outcome.notna()),
        ("deleted", original_outcome.eq("excluded")),
        ("missing", original_outcome.isna()),
    )
    # Each lookup goes once used: a column of 2.9 million rows each (up to 45 MB) at a million
    # users, all held at once when the frame below was built, the stage's peak.
    del effective_outcome, original_outcome

    code = habilitations["code_application"]
    app_outcome = _lookup(code, application_decisions["reason_code"])
    application_state = _states(
        ("retired", app_outcome.eq("APPLICATION_RETIRED")),
        ("unmapped", app_outcome.eq("APPLICATION_UNMAPPED")),
        ("missing", ~code.isin(application_decisions.index)),
    )
    del app_outcome
    efp_code = _lookup(code, application_decisions["efp_code"])

    siret = _each_distinct(habilitations["siret"], lambda distinct: _blank_to_na(siret_digits(distinct)))
    holder_type = _lookup(holder_id, user_types)
    establishment_outcome = _lookup(siret, establishment_decisions["outcome"])
    establishment_state = _states(
        ("rejected", establishment_outcome.ne(MIGRATED) & establishment_outcome.notna()),
        ("unknown", siret.notna() & establishment_outcome.isna()),
        ("not_required", siret.isna()),
        ("missing_for_pro", siret.isna() & holder_type.eq("PRO")),
    )
    del holder_type, establishment_outcome

    role_code = _canonical_roles(efp_code, habilitations["role"], mapping)
    application_code = _categories(efp_code)
    siret_codes = _categories(siret)
    del efp_code, siret

    # Columns are passed as arrays: through `.to_numpy()` every text column became Python
    # objects and was then converted back to text. The columns made here are categories (a
    # code a row, each distinct text once): as text they weighed 0.3 GB at a million users,
    # held through both habilitation suites and the transform. The legacy columns are shared,
    # not copied, and the columns made here are not copied either (copy=False: for a dict of
    # arrays pandas copies every column by default, the integers into one 2-D block: 0.1 GB at a
    # million users, under the validation's high-water mark). Nothing writes into a legacy
    # column through the facts: the validation writes only the columns it adds.
    return pd.DataFrame(
        {
            "id_habilitation": habilitations["id_habilitation"].array,
            "statut": habilitations["statut"].array,
            "holder_id": holder_id.array,
            "holder_state": holder_state,
            "application_state": application_state,
            "application_code": application_code,
            "establishment_state": establishment_state,
            "siret": siret_codes,
            # Agents' access has no SIRET; the key still has to group such rows together.
            "siret_key": _filled(siret_codes, ""),
            "role_label": habilitations["role"].array,
            "role_code": role_code,
            "date_fin": habilitations["date_fin"].array,
            "kind": habilitations["statut"].array,
        },
        copy=False,
    )


def _coded(codes: npt.NDArray[np.integer], values: Any) -> Any:
    """A text column given as codes into its distinct `values` (-1: missing), as a categorical."""
    return pd.Categorical.from_codes(codes, categories=pd.Index(values, dtype="str"))


def _categories(series: pd.Series) -> Any:
    """The text column as a categorical of its distinct values (missing stays missing)."""
    codes, distinct = pd.factorize(series, use_na_sentinel=True)
    return _coded(codes, distinct)


def _filled(column: Any, value: str) -> Any:
    """`column` (categorical or text) with `value` where it is missing."""
    if isinstance(column, pd.Categorical) and value not in column.categories:
        column = column.add_categories([value])
    return column.fillna(value)


def _lookup(keys: pd.Series, table: pd.Series) -> pd.Series:
    """`keys.map(table)`: the table's value for each key (missing where it has none), found once per distinct key."""
    codes, distinct = pd.factorize(keys, use_na_sentinel=False)
    found = table.array.take(table.index.get_indexer(distinct), allow_fill=True)
    return pd.Series(found.take(codes), index=keys.index)


def _each_distinct(series: pd.Series, function: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """`function(series)` for an element-wise `function`, computed once per distinct value (NA included)."""
    codes, distinct = pd.factorize(series, use_na_sentinel=False)
    done = function(pd.Series(distinct, dtype=series.dtype))
    return pd.Series(done.array.take(codes), index=series.index, name=series.name)


def _states(*conditions: tuple[str, pd.Series], default: str = "ok") -> Any:
    """A categorical column: the label of the last true condition of each row, `default` where none is."""
    labels = [default, *(label for label, _condition in conditions)]
    codes = np.zeros(len(conditions[0][1]), dtype=np.int8)
    for number, (_label, condition) in enumerate(conditions, start=1):
        codes[condition.to_numpy(dtype=bool, na_value=False)] = number
    return _coded(codes, labels)


def _as_text(series: pd.Series) -> Any:
    """The column as text (what the facts frame would infer from it), without a detour through objects."""
    return series.array if pd.api.types.is_string_dtype(series.dtype) and series.dtype != object \
        else series.astype("str").array


def _canonical_roles(efp_code: pd.Series, label: pd.Series, mapping: Mapping) -> Any:
    """Canonical role per habilitation, asking the mapping once per distinct (application, label)."""
    app_codes, apps = pd.factorize(efp_code, use_na_sentinel=True)
    label_codes, labels = pd.factorize(label, use_na_sentinel=False)
    pair_codes, pairs = pd.factorize(app_codes.astype(np.int64) * max(len(labels), 1) + label_codes)
    answers: list[Any] = []
    for pair in pairs:
        app, lab = divmod(int(pair), max(len(labels), 1))
        if app < 0:  # no application: no role (a NULL label means the default role, though)
            answers.append(None)
            continue
        value = labels[lab]
        answers.append(mapping.canonical_role(str(apps[app]), None if pd.isna(value) else str(value)))
    role_codes, roles = pd.factorize(pd.Series(answers, dtype="str"))  # several pairs may give one role
    return _coded(role_codes[pair_codes], roles)
