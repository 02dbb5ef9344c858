"""A fake Isaac Lab env on torch CPU tensors, with the habits of the real one that an adapter must
survive: a batch of N envs, same-step autoreset, terminated / time_outs written in place into
persistent buffers (`reset_terminated[:] = ...`), the observation dict {'policy': [N, O]}, and
extras['final_obs'] only when `compute_final_obs` is set (Isaac Lab 3.0; 2.x has none).

Dynamics: obs = [position, step counter / 10, 0, ...]; the action's first dimension moves the
position; an env terminates when |position| > 1 and times out after `max_episode_length` steps;
reward = −|position|."""
import gymnasium as gym
import numpy as np
import torch


class FakeIsaacLabEnv:
  def __init__(self, num_envs: int = 4, obs_dim: int = 3, act_dim: int = 2,
               max_episode_length: int = 5, compute_final_obs: bool = True):
    self.num_envs, self.device = num_envs, 'cpu'
    self.max_episode_length, self.compute_final_obs = max_episode_length, compute_final_obs
    self.single_observation_space = gym.spaces.Dict(
        {'policy': gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)})
    self.single_action_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)
    self.position = torch.zeros(num_envs)
    self.episode_length_buf = torch.zeros(num_envs, dtype=torch.long)
    self.reset_terminated = torch.zeros(num_envs, dtype=torch.bool)   # rewritten in place
    self.reset_time_outs = torch.zeros(num_envs, dtype=torch.bool)
    self.reward_buf = torch.zeros(num_envs)
    self.obs_dim, self.last_action = obs_dim, None

  @property
  def unwrapped(self):
    return self

  def _obs(self):
    obs = torch.zeros(self.num_envs, self.obs_dim)     # a fresh tensor each step, as Isaac Lab's
    obs[:, 0] = self.position
    obs[:, 1] = self.episode_length_buf.float() / 10
    return {'policy': obs}

  def reset(self, seed=None, options=None):
    if seed is not None:
      torch.manual_seed(seed)
    self.position.uniform_(-0.5, 0.5)
    self.episode_length_buf.zero_()
    return self._obs(), {}

  def step(self, action: torch.Tensor):
    self.last_action = action
    self.position += 0.4 * action[:, 0]
    self.episode_length_buf += 1
    self.reward_buf[:] = -self.position.abs()
    self.reset_terminated[:] = self.position.abs() > 1.0
    self.reset_time_outs[:] = self.episode_length_buf >= self.max_episode_length
    done = self.reset_terminated | self.reset_time_outs
    extras = {}
    if self.compute_final_obs:
      extras['final_obs'] = self._obs()
    if done.any():
      ids = done.nonzero().squeeze(-1)
      self.position[ids] = 0.0
      self.episode_length_buf[ids] = 0
    return self._obs(), self.reward_buf, self.reset_terminated, self.reset_time_outs, extras
