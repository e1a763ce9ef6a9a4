"""Rollout of model versions with the `stable` and `canary` labels (`python -m client rollout`).

- `steps`: init, status, canary, promote, rollback: rewrite `<repo>/models.config`
  (common.rollout_state) and wait until every server shows the result;
- `servers`: what each server reports, and the waiting;
- `compare`: the promotion gate, canary against stable on a labelled folder, and its report;
- `stats`: Wilson intervals and McNemar's test, standard library only;
- `cli`: the typer group.
"""
