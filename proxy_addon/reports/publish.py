"""Writing the reports: the edge where the run's model becomes files and lines. Called by
``cassette run`` and the pytest plugin (with their own options, the proxy's summary read back,
xdist workers' combined) and by the addon when it stops (``cassette proxy``, plain mitmdump).
Nothing is written unless asked, except the Markdown to ``$GITHUB_STEP_SUMMARY`` under GitHub
Actions (and its annotations), which ``step_summary=False`` turns off."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from proxy_addon.reports import github, html, junit, markdown
from proxy_addon.reports.run import build
from proxy_addon.reports.tokens import Price, load_prices
from proxy_addon.summary import Summary


@dataclass(frozen=True)
class Targets:
    """Where the reports go; an empty path is not written."""

    markdown: str = ""
    junit: str = ""
    html: str = ""
    # under GitHub Actions: the Markdown to $GITHUB_STEP_SUMMARY, and the annotations
    step_summary: bool = True
    prices: Mapping[str, Price] | None = None


def targets(
    markdown: str = "", junit: str = "", html: str = "", step_summary: bool = True, prices: str = ""
) -> Targets:
    """The targets from options as given (``ValueError`` naming a bad price file)."""
    loaded = load_prices(Path(prices)) if prices else None
    return Targets(markdown, junit, html, step_summary, loaded)


def publish(
    summary: Summary,
    mode: str,
    to: Targets,
    environ: Mapping[str, str],
    command: Callable[[str], None],
    tell: Callable[[str], None],
) -> None:
    """Write the reports ``to`` asks for. ``command`` prints a workflow command (stdout, where
    GitHub reads them); ``tell`` prints a line for the user (the tokens served, a report that
    could not be written)."""
    run = build(summary, mode, to.prices, Path.cwd())
    if run.tokens.input or run.tokens.output:
        tell(run.tokens.line())
    on_github = environ.get("GITHUB_ACTIONS") == "true"
    github_reports = on_github and to.step_summary
    if github_reports:
        for line in github.error_commands(run):
            command(line)
    text = markdown.render(run) if to.markdown or github_reports else ""
    step_summary = environ.get("GITHUB_STEP_SUMMARY", "")
    writes: list[tuple[str, Callable[[], str], bool]] = [
        (to.markdown, lambda: text, False),
        (to.junit, lambda: junit.render(run), False),
        (to.html, lambda: html.render(run), False),
        (step_summary if github_reports else "", lambda: text, True),
    ]
    for path, render, append in writes:
        if not path:
            continue
        try:
            if append:  # each step of a job adds its own part to the step summary
                with Path(path).open("a", encoding="utf-8") as f:
                    f.write(render() + "\n")
            else:
                from proxy_addon.store.writer import atomic_write  # the store: only to write

                atomic_write(Path(path), render().encode())
        except OSError as e:
            tell(f"cassette: could not write the report {path}: {e.strerror}")
