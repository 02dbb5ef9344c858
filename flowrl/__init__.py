"""flowrl: reinforcement learning with diffusion and flow-model policies, composed from primitives.

A method is one choice per axis (policy parameterization, sampler, improvement signal,
regularizer, critic); `flowrl.compose.compile_method` turns the choice into one jitted update.
"""
__version__ = "0.1.0"
