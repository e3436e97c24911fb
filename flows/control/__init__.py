"""The control plane on one machine (`hpcfleet server`), and who drives a run.

- `plan`: what `server up` runs where (`Plan`, remembered in server/plan.json) and the
  settings it needs (`ControlPlaneConfig`);
- `environment`: which environment each piece gets (secrets only there);
- `pieces`: the command of each piece;
- `readiness`: whether a piece answers;
- `supervisor`: start, stop and report the pieces (`up`, `down`, `status`);
- `liveness`: whether a run's orchestrator is alive (one answer for every caller).

Importing this package imports neither Prefect nor MLflow.
"""
