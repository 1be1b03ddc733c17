"""Causal interventions: the confounder dictionary and CCIM."""

from deconfound.causal.ccim import CCIM
from deconfound.causal.dictionary import ConfounderDictionary

__all__ = ["CCIM", "ConfounderDictionary"]
