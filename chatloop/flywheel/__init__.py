"""One turn of the data flywheel: export feedback -> train a candidate -> register it -> the
evaluation gate -> a canary. `chatloop flywheel --config configs/default/flywheel.yaml`."""
