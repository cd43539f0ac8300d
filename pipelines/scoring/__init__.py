"""The scoring job: its graph, the RunInference model handler, rows, heatmaps, CSV, inputs."""
