"""Container engines (Docker, Podman): asked for a container's PID and nothing else."""
