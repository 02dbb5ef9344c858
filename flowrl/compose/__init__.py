"""Composition: the chosen primitives (`Method`), their validation, the compiled agent, the loop."""
from flowrl.compose.method import Method, method, validate
from flowrl.compose.agent import Agent, TrainState, compile_method
