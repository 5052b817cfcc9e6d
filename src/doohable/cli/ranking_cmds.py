"""CLI commands of the ranking stage (registered on the shared app): ``doohable simulate``."""

from __future__ import annotations

import csv
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from doohable.cli.common import JsonOpt, app, console, emit, fail, progress

if TYPE_CHECKING:  # the ranking modules (SciPy) load only when a command runs
    from doohable.ranking.simulate import SimulationResult


@app.command("simulate")
def simulate_cmd(
    strategy: list[str] = typer.Option(["report"], "--strategy", "-s",
                                       help="Scheduler name, repeatable (random, report, ...)."),
    images: int = typer.Option(1000, "--images", help="Number of images."),
    votes_per_image: float = typer.Option(20.0, "--votes-per-image", help="Total votes / images."),
    voter_accuracy: float = typer.Option(0.75, "--voter-accuracy",
                                         help="Share of single votes on random pairs that are right."),
    spammers: float = typer.Option(0.0, "--spammers", help="Share of voters who flip a coin."),
    seeds: int = typer.Option(5, "--seeds", help="Campaigns per strategy (seeds 0..K-1)."),
    voters: int = typer.Option(20, "--voters", help="Voters in the simulated crowd."),
    left_bias: float = typer.Option(0.2, "--left-bias", help="Voters' bonus for the left image (logit)."),
    rating: str = typer.Option("auto", "--rating",
                               help="Ranking method: auto (the strategy's own), elo, bt, crowd, ..."),
    random_share: float = typer.Option(0.75, "--random-share", help="'report': share of random pairs."),
    points: int = typer.Option(0, "--points", help="Also measure at this many evenly spaced budgets "
                               "(default: 10 when --csv or --plot is given)."),
    csv_path: Path | None = typer.Option(None, "--csv", help="Write one row per seed and budget here."),
    plot_path: Path | None = typer.Option(None, "--plot", help="PNG plot: accuracy against votes per image."),
    prior_pearson: float | None = typer.Option(
        None, "--prior-pearson", min=-1.0, max=1.0,
        help="Give the campaign a model whose scores correlate R with the true qualities (R may be 0 or "
        "negative), used as the ratings' prior with its weight learned from the votes."),
    as_json: bool = JsonOpt,
) -> None:
    """Simulate labelling campaigns and measure how well each strategy ranks the images."""
    from doohable.ranking.scheduler import SCHEDULERS, create
    from doohable.ranking.simulate import RATINGS, CrowdConfig, simulate

    try:
        for name in strategy:
            create(name)
        if rating != "auto" and rating not in RATINGS:
            raise ValueError(f"unknown rating {rating!r}: known are auto, {', '.join(RATINGS)}")
        crowd = CrowdConfig(voter_accuracy, spammers, voters, left_bias)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    n_points = points or (10 if csv_path or plot_path else 0)
    checkpoints = [votes_per_image * (k + 1) / n_points for k in range(n_points)] if n_points else None
    results: list[SimulationResult] = []
    with progress(disable=as_json) as bar:
        task = bar.add_task("campaigns", total=seeds * len(strategy))
        for name in strategy:
            # options go to the schedulers that take them
            kw: dict[str, Any] = {k: v for k, v in {"random_share": random_share}.items()
                                  if k in inspect.signature(SCHEDULERS[name]).parameters}
            try:
                results.append(simulate(name, images, votes_per_image, crowd, seeds,
                                        None if rating == "auto" else rating, checkpoints,
                                        on_run=lambda _s: bar.advance(task), prior_pearson=prior_pearson,
                                        **kw))
            except ValueError as exc:
                raise fail(str(exc)) from exc
    if csv_path:
        write_csv(results, csv_path)
    if plot_path:
        write_plot(results, plot_path)
    docs = [r.to_json() for r in results]
    if as_json:
        emit(docs[0] if len(docs) == 1 else {"results": docs}, as_json)
        return
    labels = (("pairwise_accuracy", "pairwise accuracy"), ("spearman", "Spearman"),
              ("top_third_precision", "top-third precision"))
    for d in docs:
        cells = ", ".join(f"{label} {d[key]['mean']:.4f} [{d[key]['ci95'][0]:.4f}, {d[key]['ci95'][1]:.4f}]"
                          for key, label in labels)
        console.print(f"[bold]{d['strategy']}[/bold] ({d['rating']}), {d['images']} images, "
                      f"{d['votes_per_image']:g} votes/image, {d['seeds']} seeds: {cells}")


def write_csv(results: list[SimulationResult], path: Path) -> None:
    """One row per strategy, seed, budget and rating method."""
    rows = [row for r in results for row in r.rows()]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_plot(results: list[SimulationResult], path: Path) -> None:
    """Pairwise accuracy (mean and 95% CI over seeds) against votes per image, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in results:
        curve = r.to_json().get("curve") or [{"votes_per_image": r.votes_per_image, **r.summary()}]
        x = [c["votes_per_image"] for c in curve]
        mean = [c["pairwise_accuracy"]["mean"] for c in curve]
        ax.plot(x, mean, marker="o", label=f"{r.strategy} ({r.rating})")
        ax.fill_between(x, [c["pairwise_accuracy"]["ci95"][0] for c in curve],
                        [c["pairwise_accuracy"]["ci95"][1] for c in curve], alpha=0.2)
    first = results[0]
    ax.set_title(f"{first.images} images, voter accuracy {first.crowd.voter_accuracy}, "
                 f"spammers {first.crowd.spammers}, {first.seeds} seeds", fontsize=9)
    ax.set_xlabel("votes per image")
    ax.set_ylabel("pairwise accuracy = (1 + Kendall tau) / 2")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
