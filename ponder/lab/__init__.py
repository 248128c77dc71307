"""The lab: accuracy against compute for (model, budget, strategy) on verifiable tasks."""
