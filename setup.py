"""flowrl: RL with diffusion and flow-model policies, composed from primitives (JAX)."""
from setuptools import find_packages, setup

# Exact versions installed together and exercised on this project's machines (Python 3.11, CPU).
REQUIRED = [
    'jax[cpu]==0.10.2',
    'dm-haiku==0.0.17',
    'optax==0.2.8',
    'rlax==0.1.9',
    'distrax==0.1.9',
    'chex==0.1.92',
    'gin-config==0.5.0',
    'gymnasium[mujoco]==1.4.0',
    'mujoco==3.17.0',          # not 4.x: dm_control 1.0.50 needs the 3.x bindings
    'dm_control==1.0.50',
    'numpy==2.4.6',
    'scipy==1.17.1',
    'tensorboardX==2.6.5',
    'tqdm==4.70.1',
    'matplotlib==3.11.2',
    'rliable==1.2.0',
    'arch==7.2.0',             # rliable's bootstrap; it wants arch<8, and arch 7.2 fails to import
    'pandas==2.3.3',           # on pandas 3 (deprecate_kwarg changed), so both are pinned here
    'orbax-checkpoint==0.12.8',
    'minari==0.5.4',           # offline datasets, made locally (flowrl.collect); arrow storage
    'pyarrow==26.0.1',
]

# MuJoCo Playground's dm_control-suite ports (`playground:<Name>` envs): the set installed and
# stepped together with REQUIRED here (it brings flax 0.12.8; warp-lang is Playground's
# requirement, flowrl uses impl='jax')
PLAYGROUND = ['mujoco-mjx==3.17.0', 'playground==0.2.0', 'brax==0.14.2', 'warp-lang==1.18.0']

# envpool's C++ env pool for the training envs (`vector_env.backend = "envpool"`): 1.2.5 is the
# newest with a cp311 wheel; it bundles its own MuJoCo 3.6.0 and about 300 MB of assets wheels
ENVPOOL = ['envpool==1.2.5']

setup(
    name='flowrl',
    version='0.1.0',
    description='Reinforcement learning with diffusion and flow-model policies, composed from primitives.',
    packages=find_packages(include=['flowrl', 'flowrl.*']),
    python_requires='>=3.11',
    install_requires=REQUIRED,
    extras_require={
        # developers run the Ray backend's test against a loopback head, so dev includes Ray; the
        # tests run on two cores with pytest-xdist; torch (the CPU build on this project's
        # machines) runs the Isaac Lab adapter's tests against a fake env; one test steps a
        # Playground task and one trains PPO on envpool
        'dev': ['pytest==9.2.0', 'pytest-xdist==3.8.0', 'ray[tune]==2.60.0', 'torch==2.13.0']
               + PLAYGROUND + ENVPOOL,
        'ray': ['ray[tune]==2.60.0'],
        'mjx': ['mujoco-mjx==3.17.0'],
        'playground': PLAYGROUND,
        'envpool': ENVPOOL,
    },
)
