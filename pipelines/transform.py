"""The transform stage: the decided outcomes turned into EFP Connect rows and the exception register."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mappings.normalize import phones_e164
from pipelines.arrow_text import held_categories, shared_objects
from pipelines.duplicates import duplicated_rows
from pipelines.frames import LEGACY_FRAME_COLUMNS, TARGET_FRAME_COLUMNS, TEXT_DTYPE, LegacyFrames, TargetFrames
from pipelines.validate import Decisions, ValidateResult
from validation.outcomes import MIGRATED

ACCOUNT_STATUS = {"ACTIF": "ACTIVE", "EN_ATTENTE": "PENDING", "VERROUILLE": "LOCKED"}


@dataclass(frozen=True)
class TransformResult:
    target: TargetFrames
    row_counts: dict[str, int]
    elapsed_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"row_counts": self.row_counts, "elapsed_seconds": round(self.elapsed_seconds, 3)}


class Handover:
    """The extract's frames and the validation's decisions, given up to the transform by their
    holder (the run): the transform takes them out and lets each go once the rows it gives are
    made. At a million users they are 0.55 GB, all held through the making of the target frames
    (0.36 GB) when their holder keeps them: the transform's high-water mark, and the run's. Taken once."""

    def __init__(self, frames: LegacyFrames, decisions: Decisions) -> None:
        self._inputs: tuple[LegacyFrames, Decisions] | None = (frames, decisions)

    def take(self) -> dict[str, pd.DataFrame]:
        inputs, self._inputs = self._inputs, None
        if inputs is None:
            raise ValueError("these frames were handed over to a transform already")
        frames, decisions = inputs
        return {**{name: frames.table(name) for name in LEGACY_FRAME_COLUMNS},
                **{f"{name}_decided": getattr(decisions, name) for name in _DECIDED}}


_DECIDED = ("users", "establishments", "applications", "habilitations")


def transform(frames: LegacyFrames | Handover, validated: ValidateResult | None = None) -> TransformResult:
    """The target frames and the register from the extract's frames and the validation's decisions
    (`validated`), or from a Handover of both."""
    started = time.perf_counter()
    if isinstance(frames, Handover):
        held = frames.take()
    elif validated is not None:
        held = Handover(frames, validated.decisions).take()
    else:
        raise TypeError("transform needs the validation's result with the extract's frames")
    # Each input goes as soon as what needs it is made: the accounts first (the users' text, the
    # largest of the extract's frames, is theirs alone), the register while the decisions are all
    # there, then each table. Nothing else is held: every frame is popped from `held`.
    accounts = _accounts(held.pop("utilisateurs"), held["users_decided"])
    exceptions = _exceptions(held)
    del held["users_decided"]
    establishments = _establishments(held.pop("etablissements"), held.pop("establishments_decided"))
    applications = _applications(held.pop("applications"), held.pop("applications_decided"))
    # Only the columns the access rows take from the legacy rows, indexed once for both kinds.
    habilitations = held.pop("habilitations")
    dates = habilitations[list(_ACCESS_SOURCE_COLUMNS)].set_index(habilitations["id_habilitation"].to_numpy())
    del habilitations
    decided = held.pop("habilitations_decided")
    target = TargetFrames(
        accounts=accounts,
        establishments=establishments,
        applications=applications,
        entitlements=_access(dates, decided, "ACTIVE"),
        access_requests=_access(dates, decided, "EN_ATTENTE"),
        exceptions=exceptions,
    )
    return TransformResult(target=target, row_counts=target.row_counts(),
                           elapsed_seconds=time.perf_counter() - started)


def _accounts(utilisateurs: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame:
    from mappings.normalize import clean_name, email_of, login_of

    # The users' columns the accounts take, each let go once its migrated rows are taken (when the
    # frame is the transform's alone, as handed over): the whole frame held until the accounts were
    # made was 0.1 GB at a million users, under the transform's high-water mark, and the run's.
    columns = {name: utilisateurs[name] for name in _ACCOUNT_SOURCE_COLUMNS}
    del utilisateurs
    keep = columns["id_utilisateur"].map(users["outcome"]).eq(MIGRATED).to_numpy()

    def migrated(column: str) -> pd.Series:
        # Each column filtered when it is worked on: a filtered copy of the users' frame weighed
        # 0.1 GB at a million users, at the transform's high-water mark.
        return columns.pop(column)[keep]

    courriel = migrated("courriel")
    login, email = login_of(courriel), email_of(courriel)
    del courriel
    telephone = migrated("telephone").str.strip()
    frame = pd.DataFrame(
        {
            "legacy_user_id": migrated("id_utilisateur").astype("int64"),
            "login": login,
            "email": email,
            "last_name": clean_name(migrated("nom")),
            "first_name": clean_name(migrated("prenom")),
            # Text even when no phone survives, so that every engine gets a text column.
            "phone": phones_e164(telephone.mask(telephone.str.len() == 0)),
            "account_type": migrated("type_compte"),
            "status": _mapped(migrated("statut"), ACCOUNT_STATUS),
            "created_at": migrated("date_creation"),
            "last_login_at": migrated("date_derniere_connexion"),
        },
        copy=False,  # columns made here, for this frame only: not copied into 2-D blocks
    )
    return frame.reset_index(drop=True)[list(TARGET_FRAME_COLUMNS["accounts"])]


_ACCOUNT_SOURCE_COLUMNS = ("id_utilisateur", "courriel", "nom", "prenom", "telephone", "type_compte", "statut",
                           "date_creation", "date_derniere_connexion")


def _mapped(values: pd.Series, mapping: dict[str, str]) -> pd.Series:
    """`values.map(mapping)`, a categorical (the extract's enumerations) staying one: pandas gives
    text as soon as a category maps to nothing (a byte a row becomes a string a row)."""
    if not isinstance(values.dtype, pd.CategoricalDtype):
        return values.map(mapping)
    codes, categories = pd.factorize(values.cat.categories.map(mapping))  # -1 for unmapped
    # Position -1 of the appended -1 is where a missing value's code (-1) points.
    taken = np.append(codes, -1)[values.cat.codes.to_numpy()]
    return pd.Series(pd.Categorical.from_codes(taken, categories=categories), index=values.index)


def _establishments(etablissements: pd.DataFrame, establishments: pd.DataFrame) -> pd.DataFrame:
    migrated = establishments[establishments["outcome"].eq(MIGRATED)]
    rows = etablissements.iloc[migrated["survivor_row"].to_numpy()]
    siret = migrated.index.to_series().reset_index(drop=True)
    return pd.DataFrame(
        {
            "siret": siret,
            "siren": siret.str.slice(0, 9),
            "name": rows["raison_sociale"].str.strip().to_numpy(),
            "address": rows["adresse"].to_numpy(),
            "postal_code": rows["code_postal"].to_numpy(),
            "city": rows["commune"].to_numpy(),
            "closed_on": rows["date_fermeture"].to_numpy(),
        }
    )


def _applications(applications: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    first = applications.drop_duplicates("code_application", keep="first")
    migrated = first[first["code_application"].map(decisions["outcome"]).eq(MIGRATED).to_numpy()]
    frame = pd.DataFrame(
        {
            "code": migrated["code_application"].map(decisions["efp_code"]).to_numpy(),
            "name": migrated["libelle"].to_numpy(),
            "legacy_code": migrated["code_application"].to_numpy(),
        }
    )
    # Two legacy codes mapped to one EFP Connect code make one application.
    return frame.drop_duplicates("code", keep="first").reset_index(drop=True)


_ACCESS_SOURCE_COLUMNS = ("responsable_acces", "date_debut", "date_fin", "date_relance", "id_delegant")


def _access(legacy: pd.DataFrame, decided: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Entitlements (ACTIVE) or access requests (EN_ATTENTE), one per surviving habilitation.

    A survivor of DUPLICATE_ACCESS absorbs its group: access manager if any member was, the
    earliest start, the latest end (no end wins), the latest reminder. Only the groups of two or
    more are grouped (a few percent of the rows): every other survivor keeps its own values, and
    grouping them all took a gigabyte of temporaries at a million users.
    """
    kept = decided["outcome"].eq(MIGRATED) | decided["reason_code"].eq("DUPLICATE_ACCESS")
    chosen = (kept & decided["kind"].eq(kind)).to_numpy(dtype=bool)
    # Each filtered to the columns it needs: a copy of every column of the decided habilitations
    # weighed 450 MB at a million users.
    members = decided.loc[chosen, ["merged_into"]]
    group = members["merged_into"].fillna(members.index.to_series()).astype("int64")
    survivors = decided.loc[chosen & decided["outcome"].eq(MIGRATED).to_numpy(dtype=bool),
                            ["holder_id", "application_code", "siret", "role_code"]]
    # Each survivor's own values, taken straight into the output's arrays (a frame of them, then
    # another of the values, weighed 0.3 GB at a million users).
    own = _positions(legacy.index, survivors.index)
    is_access_manager = legacy["responsable_acces"].to_numpy(dtype=bool)[own]
    valid_from = legacy["date_debut"].to_numpy()[own]
    valid_until = legacy["date_fin"].to_numpy()[own]
    last_reminder_at = legacy["date_relance"].to_numpy()[own]
    # By sorting: pandas' hash table of 2.4 million ids was the transform's high-water mark.
    in_group = duplicated_rows(group.to_frame())
    if in_group.any():
        shared = group[in_group].to_numpy()
        source = legacy.iloc[_positions(legacy.index, members.index[in_group])]
        no_end = source["date_fin"].isna().groupby(shared).any()
        grouped = pd.DataFrame(
            {
                "is_access_manager": source["responsable_acces"].astype(bool).groupby(shared).any(),
                "valid_from": source["date_debut"].groupby(shared).min(),
                "valid_until": source["date_fin"].groupby(shared).max().mask(no_end),
                "last_reminder_at": source["date_relance"].groupby(shared).max(),
            }
        )
        absorbing = grouped.index.intersection(survivors.index)
        at = survivors.index.get_indexer(absorbing)
        absorbed = grouped.loc[absorbing]
        is_access_manager[at] = absorbed["is_access_manager"].to_numpy(dtype=bool)
        valid_from[at] = absorbed["valid_from"].to_numpy()
        valid_until[at] = absorbed["valid_until"].to_numpy()
        last_reminder_at[at] = absorbed["last_reminder_at"].to_numpy()
    frame = pd.DataFrame(
        {
            "legacy_habilitation_id": survivors.index.to_numpy(dtype=np.int64),
            "legacy_user_id": survivors["holder_id"].astype("int64").to_numpy(),
            "application_code": _few_valued(survivors["application_code"]),
            "siret": _few_valued(survivors["siret"]),
            "role": _few_valued(survivors["role_code"]),
            "is_access_manager": is_access_manager,
            "valid_from": valid_from,
            "valid_until": valid_until,
            "delegated_by_legacy_user_id": legacy["id_delegant"].astype("Int64").array.take(own),
            "requested_at": valid_from,
            "last_reminder_at": last_reminder_at,
        },
        copy=False,  # arrays made here, for this frame only
    )
    table = "entitlements" if kind == "ACTIVE" else "access_requests"
    return frame[list(TARGET_FRAME_COLUMNS[table])]


def _positions(keys: pd.Index, wanted: pd.Index) -> npt.NDArray[np.intp]:
    """Where each of `wanted` is in `keys`, unique ids in increasing order (the extract sorts the
    habilitations by id): found by binary search, where `get_indexer` built a hash table of every
    key (90 MB at a million users, at the transform's high-water mark)."""
    ids, targets = keys.to_numpy(dtype=np.int64), wanted.to_numpy(dtype=np.int64)
    if not keys.is_monotonic_increasing:
        positions: npt.NDArray[np.intp] = keys.get_indexer(wanted)
    else:
        positions = np.minimum(np.searchsorted(ids, targets), max(len(ids) - 1, 0))
        if len(ids):
            positions[ids[positions] != targets] = -1
        else:
            positions = np.full(len(targets), -1, dtype=np.intp)
    if (positions < 0).any():
        raise ValueError("a decided habilitation is not among the legacy habilitations")
    return positions


def _few_valued(values: pd.Series) -> Any:
    """A column of a few thousand distinct texts, for the access frames: a categorical of the
    decided habilitations stays one, of the categories its rows hold (a code of 1 to 2 bytes a
    row); text stays text, one Python string per distinct value (`shared_objects`).

    As text, the three columns of 2.3 million access rows were 0.1 GB of Arrow strings at a
    million users (and 0.2 GB more while the frame was made), held from here through the load.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        return _held_categories(values)
    return shared_objects(values)


def _held_categories(values: pd.Series) -> Any:
    """`values.cat.remove_unused_categories().array`, the categories held found by counting the
    codes (`held_categories`): pandas sorts every code for it (0.08 GB of temporaries for 2.3
    million rows, the transform's high-water mark at a million users)."""
    used, codes = held_categories(values)
    if used.all():
        return values.array
    # The categories held, as pandas' own removal makes them (on one row per category: a small
    # sort), so that they are not checked again one by one.
    current: Any = values.dtype
    dtype: Any = pd.Categorical.from_codes(np.flatnonzero(used), dtype=current).remove_unused_categories().dtype
    return pd.Categorical.from_codes(codes, dtype=dtype)


def _register(entity: str, keys: pd.Series, outcome: pd.Series, reason: pd.Series, detail: pd.Series,
              merged_into: pd.Series | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity": entity,
            "legacy_key": _register_text(keys.astype(str)),
            "outcome": _register_text(outcome),
            "reason_code": _register_text(reason),
            "detail": _register_text(detail),
            "merged_into": (merged_into.astype("string").to_numpy() if merged_into is not None
                            else pd.array([pd.NA] * len(keys), dtype="string")),
        }
    )


def _register_text(values: pd.Series) -> Any:
    """A text column of the register: what the frame infers from `values.to_numpy()` (text, NaN
    where missing), made in Arrow from a text column or a categorical of text (the decided
    habilitations' outcomes and reasons), without a Python string a row: through objects, the
    habilitations' keys, outcomes and reasons took 0.1 GB more at a million users, at the
    transform's high-water mark. Any other column, or one without a value, goes through objects."""
    if not len(values) or not values.notna().any():
        return values.to_numpy()
    if isinstance(values.dtype, pd.CategoricalDtype) and values.cat.categories.dtype == TEXT_DTYPE:
        categories = pa.array(values.cat.categories.to_numpy(dtype=object), type=pa.large_string())
        codes = values.cat.codes.to_numpy()
        return pd.array(pc.take(categories, pa.array(codes, mask=codes < 0)), dtype=TEXT_DTYPE)
    return values.array if values.dtype == TEXT_DTYPE else values.to_numpy()


def _exceptions(held: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The register, from the decisions of every entity (`held`: as Handover.take gives them,
    the users' frame apart), the establishments' rows and the habilitations' end dates."""
    from pipelines.exception_details import describe

    etablissements = held["etablissements"]
    parts: list[pd.DataFrame] = []
    users = held["users_decided"]
    out = users[users["outcome"].ne(MIGRATED)]
    parts.append(_register("user", out.index.to_series(), out["outcome"], out["reason_code"],
                           describe("user", out), out["merged_into"]))
    dropped = users[users["phone_dropped"]]
    parts.append(_register("user", dropped.index.to_series(), pd.Series("corrected", index=dropped.index),
                           pd.Series("PHONE_DROPPED", index=dropped.index),
                           describe("user_phone", dropped)))

    est = held["establishments_decided"]
    rejected = est[est["outcome"].ne(MIGRATED)]
    parts.append(_register("establishment", rejected.index.to_series(), rejected["outcome"],
                           rejected["reason_code"], describe("establishment", rejected)))
    for reason, mask in (("SIREN_CORRECTED", est["siren_corrected"]), ("DUPLICATE_SIRET", est["duplicate_rows"] > 0)):
        chosen = est[mask]
        parts.append(_register("establishment", chosen.index.to_series(), pd.Series("corrected", index=chosen.index),
                               pd.Series(reason, index=chosen.index), describe(reason, chosen, etablissements)))

    apps = held["applications_decided"]
    out_apps = apps[apps["outcome"].ne(MIGRATED)]
    parts.append(_register("application", out_apps.index.to_series(), out_apps["outcome"],
                           out_apps["reason_code"], describe("application", out_apps)))

    habs = held["habilitations_decided"]
    out_habs = habs[habs["outcome"].ne(MIGRATED)]
    # Their end dates, from the extract (the decisions do not copy them): for the EXPIRED details.
    legacy = held["habilitations"]
    out_habs = out_habs.assign(date_fin=legacy["date_fin"].to_numpy()[
        _positions(pd.Index(legacy["id_habilitation"].to_numpy()), out_habs.index)])
    parts.append(_register("habilitation", out_habs.index.to_series(), out_habs["outcome"],
                           out_habs["reason_code"], describe("habilitation", out_habs),
                           out_habs["merged_into"]))
    register = pd.concat([p for p in parts if not p.empty] or [parts[0]], ignore_index=True)
    return register[list(TARGET_FRAME_COLUMNS["exceptions"])]
