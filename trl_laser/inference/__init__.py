"""Self-reward at inference: scoring during generation, test-time voting, verification metrics and plots.

`SelfRewardScorer` lives in `trl_laser.scoring.scorer` (imported on demand: it pulls in torch and transformers,
while voting and metrics are plain Python).
"""
