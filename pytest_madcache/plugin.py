"""pytest glue (filled in by the plugin issue)."""
