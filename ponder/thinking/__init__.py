"""Thinking control: budgets, budget forcing, loop guard, answer extraction."""
