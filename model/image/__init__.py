"""One image: BreakHis naming, decoding and preprocessing, quality, stain jitter, overlays."""
