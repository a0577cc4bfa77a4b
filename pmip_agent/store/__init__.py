"""Persistence of the binding cache (LMA) and binding update list (MAG) across restarts."""

from .serialize import (
    binding_from_row,
    binding_to_json,
    binding_to_row,
    bul_from_row,
    bul_to_json,
    bul_to_row,
)
from .sqlite import SCHEMA_VERSION, LmaStore, MagStore, StoreError

__all__ = [
    "SCHEMA_VERSION",
    "LmaStore",
    "MagStore",
    "StoreError",
    "binding_from_row",
    "binding_to_json",
    "binding_to_row",
    "bul_from_row",
    "bul_to_json",
    "bul_to_row",
]
