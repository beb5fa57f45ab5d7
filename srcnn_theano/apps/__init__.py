"""Applications over the library: upscaling photos, figures, the paper-style table, speed timings."""
