"""Confidence-aware strategies (DeepConf-style); filled in by the answers work."""
