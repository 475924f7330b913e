"""One self-contained HTML report per dataset (template: bgen_assets/templates/report.html.j2):
the paper's Tables 1-3 (utility), Table 4 (BehaviorGen ablation), fidelity and privacy of every
generator built, the privacy gate's verdicts, generation costs and the plots (embedded PNGs).

It shows no figure the data cannot support: a report of a scope smaller than the data opens by
saying its figures are not evidence; result rows carry the notes of bgen_assets/results.py
(a predictor no better than one intent, a scenario without synthetic data); epsilons above
EPSILON_SHOWN_UP_TO are shown as a bound; each utility plot is one table and one predictor."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from pathlib import Path

import jinja2
import pandas as pd

from bgen_assets.config import Project
from bgen_assets.generators import GeneratorSpec
from bgen_assets.intervals import LEVEL
from bgen_assets.results import (
    NOTE_ONE_INTENT,
    NOTES,
    TABLE_METRICS,
    TABLES,
    best_generator_lines,
    formatted,
    interval_legend,
    utility_tables,
)


def result_tables(scores: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Tables 1-3 of the scores ({} before any predictor is trained), computed once per report."""
    return utility_tables(scores) if len(scores) else {}

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
FIDELITY_ROWS = {"synthetic_weeks": "synthetic weeks", "real_weeks": "real weeks",
                 "synthetic_events_per_week": "events per synthetic week", "real_events_per_week": "events per real week"}
FIDELITY_QUALITY_ROWS = {"pass_at_1": "Pass@1 (higher)", "validity": "valid weeks (higher)"}
# Above this an epsilon promises nothing (an attacker's odds may grow e^10 ~ 22,000-fold); far larger
# values come from overlap distributions with almost no spread among few users, not from a real estimate.
EPSILON_SHOWN_UP_TO = 10.0
PAPER_SCOPES = ("paper", "full")   # the first one declared is the scope whose figures are evidence
COST_COLUMNS = ["user_weeks", "failed_weeks", "requests", "llm_calls", "cache_hits", "prompt_tokens",
                "completion_tokens", "llm_seconds"]


def model_used(spec: GeneratorSpec) -> str:
    """What generates a declaration's data, in words (the LLM and backend for prompt-based kinds)."""
    if spec.kind != "behaviorgen":
        return f"{spec.kind} (bgen_assets/generators/{spec.kind}.py)"
    backend = spec.settings.backend_config
    return f"LLM {backend.model} via {backend.kind}" + (f" at {backend.base_url}" if backend.base_url else "")


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


def scale_warning(project: Project, dataset: str) -> str:
    """The report's opening caveat when its scope is a subset of the data ('' for a whole-data scope)."""
    selection = project.selection(dataset)
    if selection.users is None and selection.max_weeks_per_user is None:
        return ""
    scale = f"{len(selection.users)} users" if selection.users is not None else "every user"
    if selection.max_weeks_per_user is not None:
        scale += f", at most {selection.max_weeks_per_user} weeks each"
    paper = next((scope for scope in PAPER_SCOPES if scope in project.scopes), "full")
    return (f"Scope {project.scope!r} ({scale}): these figures show that the pipeline runs end to "
            f"end; they are not evidence about the method. For figures at the paper's scale run "
            f"`bgen run --scope {paper}`.")


def fidelity_overview(fidelity: pd.DataFrame) -> pd.DataFrame:
    """The `all` rows of the fidelity tables, one column per generator and one row per measure, so
    that it stays page-wide however many generators are built."""
    from bgen_assets.quality import plots

    labels = {**FIDELITY_ROWS, **plots.FIDELITY_METRICS, **FIDELITY_QUALITY_ROWS}
    overall = fidelity[fidelity["level"] == "all"].set_index("generator")[list(labels)].rename(columns=labels)
    return overall.T.rename_axis(index="measure", columns=None).reset_index()


def real_vs_real_line(fidelity: pd.DataFrame) -> str:
    """Which generators' intent and time-of-week JSDs reach those of another real user's week."""
    from bgen_assets.quality.fidelity import REAL_VS_REAL, at_real_vs_real_bar  # scipy: not with the graph

    at_bar = at_real_vs_real_bar(fidelity[fidelity["level"] == "all"].set_index("generator"))
    if at_bar.empty:
        return ""
    reached, missed = sorted(at_bar.index[at_bar]), sorted(at_bar.index[~at_bar])
    return (f"At the real-vs-real bar (intent and time-of-week JSD at or below {REAL_VS_REAL}'s, another real "
            f"user's week): {', '.join(reached) or 'none'}; above it: {', '.join(missed) or 'none'}.")


def privacy_overview(privacy: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """The `all` rows for reading, with epsilons above EPSILON_SHOWN_UP_TO shown as a bound; and
    whether any was."""
    overall = privacy[privacy["level"] == "all"].set_index("generator")[list(PRIVACY_SUMMARY)]
    capped = overall["dp_epsilon"] > EPSILON_SHOWN_UP_TO
    overall["dp_epsilon"] = [f"> {EPSILON_SHOWN_UP_TO:g}" if over else "-" if pd.isna(value) else f"{value:.3f}"
                             for value, over in zip(overall["dp_epsilon"], capped)]
    return overall.rename(columns=PRIVACY_SUMMARY).reset_index(), bool(capped.any())


def figure_pngs(fidelity: pd.DataFrame, tables: dict[str, pd.DataFrame], real: pd.DataFrame,
                synthetic: dict[str, pd.DataFrame]) -> dict[str, bytes]:
    """The report's plots as PNG bytes, by file name: per result table and predictor
    (`utility_TABLE_EXPERIMENT.png`, the table's score rows that hold figures), fidelity, and
    each generator's case-study user (`intents_GENERATOR.png`)."""
    from bgen_assets.quality import plots  # matplotlib: loaded when a report is made, not with the graph

    pngs = {}
    if len(fidelity):
        pngs["fidelity.png"] = plots.png(plots.fidelity_figure(fidelity))
    for table, rows in tables.items():
        shown = rows[(rows["kind"] == "score") & rows[list(TABLE_METRICS)].notna().all(axis=1)]
        for experiment, chosen in shown.groupby("experiment"):
            labels = [f"{row} (one intent)" if note == NOTE_ONE_INTENT else row
                      for row, note in zip(chosen["row"], chosen["note"])]
            title = f"{TABLES[table]}: predictor {experiment}, pooled over the individual users' test events"
            bounds = [f"{metric}_{side}" for metric in TABLE_METRICS for side in ("low", "high")]
            pngs[f"utility_{table}_{experiment}.png"] = plots.png(plots.utility_figure(
                chosen.set_axis(labels)[list(TABLE_METRICS)], f"{title}\n(bars: {LEVEL:.0%} intervals)",
                chosen.set_axis(labels)[bounds]))
    population = real.loc[real["role"] == "population", "intent"]
    for generator, events in synthetic.items():
        if len(events):
            user = events["user_id"].value_counts().index[0]  # the case study: the user with most synthetic events
            pngs[f"intents_{generator}.png"] = plots.png(plots.intent_distribution_figure(
                real.loc[real["user_id"] == user, "intent"], population, events.loc[events["user_id"] == user, "intent"],
                user, generator))
    return pngs


def render(dataset: str, description: str, caveat: str, specs: list[GeneratorSpec], tables: dict[str, pd.DataFrame],
           fidelity: pd.DataFrame, privacy: pd.DataFrame, logs: dict[str, pd.DataFrame], pngs: dict[str, bytes]) -> str:
    """The HTML report; `caveat` (scale_warning) opens it when not empty."""
    def html(frame: pd.DataFrame) -> str:
        return frame.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-", border=0)

    built = set(logs)
    privacy_shown, epsilon_capped = privacy_overview(privacy)
    ablation = ablation_table(fidelity) if len(fidelity) else pd.DataFrame()
    return jinja2.Template(TEMPLATE.read_text()).render(
        dataset=dataset, description=description, caveat=caveat,
        generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        models=[(spec.name, model_used(spec)) for spec in specs if spec.name in built],
        utility=[(TABLES[name], html(formatted(table)), sorted(n for n in pngs if n.startswith(f"utility_{name}_")))
                 for name, table in tables.items()],
        interval_legend=interval_legend(),
        best_generators=best_generator_lines(tables) if tables else [],
        notes={note: NOTES[note] for note in sorted({n for table in tables.values() for n in table["note"] if n})},
        ablation=html(ablation) if len(ablation) else "",
        ablation_missing=[v for v in ABLATION_VARIANTS if v not in set(fidelity.get("generator", ()))],
        fidelity=html(fidelity_overview(fidelity)) if len(fidelity) else "",
        real_vs_real=real_vs_real_line(fidelity) if len(fidelity) else "",
        privacy=html(privacy_shown), epsilon_capped=epsilon_capped, epsilon_bound=EPSILON_SHOWN_UP_TO,
        verdicts=privacy[privacy["level"] == "all"].set_index("generator")["gate_reason"].to_dict(),
        costs=html(generation_costs(logs)),
        images={name: base64.b64encode(data).decode() for name, data in pngs.items()},
    )
