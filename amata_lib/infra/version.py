"""The library's version, recorded in every result's provenance."""

VERSION = "0.3.0"
