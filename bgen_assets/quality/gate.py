"""The privacy gate: a synthetic table may feed training only if its privacy evaluation passed
the thresholds declared under `privacy_gate:` in bgen_project.yml and still describes the
table as it is now."""

from __future__ import annotations

import math

from bgen_assets import names
from bgen_assets.config import PrivacyGate
from bgen_assets.warehouse import Warehouse, table_exists, table_fingerprint


def judge(summary: dict, gate: PrivacyGate) -> tuple[bool, str]:
    """Verdict on the `all` row of a privacy table: (passed, reason naming thresholds and values)."""
    if not summary["synthetic_weeks"]:
        return True, "no synthetic weeks to evaluate"
    share, attack = summary["share_top1_at_least"], summary["mia_accuracy"]
    share_text = (f"{share:.1%} of {summary['synthetic_weeks']} synthetic weeks have a real week with overlap "
                  f">= {gate.overlap:g} (privacy_gate.max_share_weeks_at_overlap = {gate.max_share_weeks_at_overlap:.1%})")
    attack_text = ("membership inference not evaluable (no users outside the generator's input)" if math.isnan(attack)
                   else f"membership inference accuracy {attack:.3f} (privacy_gate.max_membership_inference_accuracy "
                        f"= {gate.max_membership_inference_accuracy:g})")
    failures = [text for text, failed in [
        (share_text, share > gate.max_share_weeks_at_overlap),
        (attack_text, not math.isnan(attack) and attack > gate.max_membership_inference_accuracy),
    ] if failed]
    if failures:
        return False, "privacy gate failed: " + "; ".join(failures)
    return True, f"privacy gate passed: {share_text}; {attack_text}"


def synthetic_fingerprint(warehouse: Warehouse, dataset: str, generator: str) -> str:
    """Row count and content hash of `DS.synthetic_NAME` ('0:0' if absent)."""
    table = names.synthetic(dataset, generator)
    if not table_exists(warehouse, table.schema, table.name):
        return "0:0"
    return "{}:{}".format(*table_fingerprint(warehouse, table.schema, table.name))


def gate_verdict(warehouse: Warehouse, dataset: str, generator: str) -> tuple[bool, str]:
    """Whether `DS/synthetic_NAME` may be used for training: its stored privacy verdict, provided
    the evaluation exists and was made on the table's current content."""
    privacy, synthetic = names.privacy(dataset, generator), names.synthetic(dataset, generator)
    evaluation, table = privacy.key.to_user_string(), synthetic.key.to_user_string()
    if not table_exists(warehouse, privacy.schema, privacy.name):
        return False, f"{table} has no privacy evaluation: materialise {evaluation}"
    row = warehouse.query(f"SELECT gate_passed, gate_reason, synthetic_fingerprint FROM {privacy.sql} WHERE level = 'all'")
    if row.empty:
        return False, f"{evaluation} holds no summary row"
    if row["synthetic_fingerprint"].iloc[0] != synthetic_fingerprint(warehouse, dataset, generator):
        return False, (f"{evaluation} is out of date: {table} changed since it was "
                       f"evaluated; materialise {evaluation} again")
    return bool(row["gate_passed"].iloc[0]), str(row["gate_reason"].iloc[0])
