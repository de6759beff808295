"""Decision analyzers: what reads an exchange's decisions and says what was weighed, why the
action was taken, which values guided it and how confident that reading is.

* `local` (the default): deterministic and offline, `observer.local_analyzer`;
* `anthropic`: a model reads the reasoning through the official SDK, falling back to the local
  analysis on any failure (`observer.anthropic_analyzer`).

`build_analyzer(settings)` gives the one the settings ask for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from smoltbot.core.settings import Settings
from smoltbot.observer import local_analyzer
from smoltbot.observer.extraction import Extraction
from smoltbot.observer.local_analyzer import Analysis

__all__ = ["AnalysisResult", "Analyzer", "LocalAnalyzer", "build_analyzer"]


@dataclass
class AnalysisResult:
    analyses: list[Analysis]
    #: The analyzer that produced `analyses`: local | anthropic.
    analyzer: str
    #: Why the model analyzer was not used, when it was asked for.
    fallback_reason: str = ""


class Analyzer(Protocol):
    name: str

    async def analyze(self, extraction: Extraction, card: dict[str, Any], outcome: str) -> AnalysisResult: ...

    async def close(self) -> None: ...


class LocalAnalyzer:
    name = "local"

    async def analyze(self, extraction: Extraction, card: dict[str, Any], outcome: str) -> AnalysisResult:
        return AnalysisResult(local_analyzer.analyze(extraction, card, outcome=outcome), "local")

    async def close(self) -> None:
        return None


def build_analyzer(settings: Settings) -> Analyzer:
    if settings.analyzer == "anthropic":
        # Imported here: the anthropic analyzer builds on this module (its local fallback).
        from smoltbot.observer.anthropic_analyzer import AnthropicAnalyzer

        return AnthropicAnalyzer(model=settings.analyzer_model, api_key=settings.analyzer_api_key,
                                 base_url=settings.analyzer_base_url, timeout=settings.analyzer_timeout)
    return LocalAnalyzer()
