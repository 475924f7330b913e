"""One self-contained HTML report per dataset (template: bgen_assets/templates/report.html.j2):
the paper's Tables 1-3 (utility), Table 4 (BehaviorGen ablation), fidelity and privacy of every
generator built, the privacy gate's verdicts, generation costs and the plots (embedded PNGs)."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from pathlib import Path

import jinja2
import pandas as pd

from bgen_assets.generators import GeneratorSpec, generator_kind
from bgen_assets.results import TABLES, formatted, utility_tables

TEMPLATE = Path(__file__).parent / "templates" / "report.html.j2"
SOURCE_FILES = (TEMPLATE, Path(__file__))   # what decides the report's content: its code version
ABLATION_VARIANTS = ("behaviorgen", "behaviorgen_no_profile", "behaviorgen_no_role", "behaviorgen_no_segment",
                     "behaviorgen_no_format")
ABLATION_COLUMNS = {"ks_p_time_of_week": "KS_P", "bleu": "BLEU", "bd_intent": "BD", "jsd_intent": "JSD",
                    "pass_at_1": "Pass@1"}
PRIVACY_SUMMARY = {"synthetic_weeks": "synthetic weeks", "top1_overlap_mean": "top-1 overlap",
                   "top3_overlap_mean": "top-3 overlap", "top5_overlap_mean": "top-5 overlap",
                   "share_top1_at_least": "share of weeks at gate level", "mia_accuracy": "membership inference",
                   "dp_epsilon": "epsilon (max over users)", "gate_passed": "gate passed"}
COST_COLUMNS = ["user_weeks", "failed_weeks", "requests", "llm_calls", "cache_hits", "prompt_tokens",
                "completion_tokens", "llm_seconds"]


def model_used(spec: GeneratorSpec) -> str:
    """What generates a declaration's data, in words (the LLM and backend for prompt-based kinds)."""
    if spec.kind != "llm":
        return f"{spec.kind} (bgen_assets/generators/{generator_kind(spec.kind).__name__.rsplit('.', 1)[-1]}.py)"
    backend = spec.params.get("backend", {})
    return f"LLM {backend.get('model')} via {backend.get('kind')}" + (
        f" at {backend['base_url']}" if backend.get("base_url") else "")


def generation_costs(logs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for generator, log in logs.items():
        rows.append({"generator": generator, "user_weeks": len(log), "failed_weeks": int((log["status"] == "failed").sum()),
                     "requests": int(log["attempts"].sum()), "llm_calls": int(log["llm_calls"].sum()),
                     "cache_hits": int(log["cache_hits"].sum()), "prompt_tokens": int(log["prompt_tokens"].sum()),
                     "completion_tokens": int(log["completion_tokens"].sum()),
                     "llm_seconds": round(float(log["latency_s"].sum()), 1)})
    return pd.DataFrame(rows, columns=["generator", *COST_COLUMNS])


def ablation_table(fidelity: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 4 from the `all` rows of the BehaviorGen variants' fidelity tables."""
    overall = fidelity[(fidelity["level"] == "all") & fidelity["generator"].isin(ABLATION_VARIANTS)]
    table = overall.set_index("generator").reindex([v for v in ABLATION_VARIANTS if v in set(overall["generator"])])
    return table[list(ABLATION_COLUMNS)].rename(columns=ABLATION_COLUMNS).reset_index()


def figure_pngs(fidelity: pd.DataFrame, scores: pd.DataFrame, real: pd.DataFrame,
                synthetic: dict[str, pd.DataFrame]) -> dict[str, bytes]:
    """The report's plots as PNG bytes, by file name."""
    from bgen_assets.evaluation import plots  # matplotlib: loaded when a report is made, not with the graph

    pngs = {}
    if len(fidelity):
        pngs["fidelity.png"] = plots.png(plots.fidelity_figure(fidelity))
    pooled = scores[(scores["user_id"] == "all") & (scores["generator"] != "real")]
    for scenario, rows in pooled.groupby("scenario"):
        pngs[f"utility_{scenario}.png"] = plots.png(plots.utility_figure(
            rows[["generator", "precision", "recall", "ndcg@3", "ndcg@5"]]))
    population = real.loc[real["role"] == "population", "intent"]
    for generator, events in synthetic.items():
        if len(events):
            user = events["user_id"].value_counts().index[0]  # the case study: the user with most synthetic events
            pngs[f"intents_{generator}.png"] = plots.png(plots.intent_distribution_figure(
                real.loc[real["user_id"] == user, "intent"], population, events.loc[events["user_id"] == user, "intent"],
                user, generator))
    return pngs


def render(dataset: str, description: str, specs: list[GeneratorSpec], scores: pd.DataFrame, fidelity: pd.DataFrame,
           privacy: pd.DataFrame, logs: dict[str, pd.DataFrame], pngs: dict[str, bytes]) -> str:
    def html(frame: pd.DataFrame) -> str:
        return frame.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-", border=0)

    built = set(logs)
    overall_privacy = privacy[privacy["level"] == "all"].set_index("generator")
    return jinja2.Template(TEMPLATE.read_text()).render(
        dataset=dataset, description=description,
        generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        models=[(spec.name, model_used(spec)) for spec in specs if spec.name in built],
        utility=[(TABLES[name], html(formatted(table))) for name, table in utility_tables(scores).items()] if len(scores) else [],
        ablation=html(ablation_table(fidelity)) if len(fidelity) else "",
        fidelity=html(fidelity[fidelity["level"] == "all"].drop(columns=["level", "user_id", "role"], errors="ignore")),
        privacy=html(overall_privacy[list(PRIVACY_SUMMARY)].rename(columns=PRIVACY_SUMMARY).reset_index()),
        verdicts=overall_privacy["gate_reason"].to_dict(),
        costs=html(generation_costs(logs)),
        images={name: base64.b64encode(data).decode() for name, data in pngs.items()},
    )
