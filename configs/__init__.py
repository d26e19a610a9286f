"""Experiment configs, also importable from the installed package as `w2s.configs.<name>`
(setup.py maps this directory there), so a notebook without a checkout can do
`from w2s.configs import w2s_offline; config = w2s_offline.get_config('seeds=2')`."""
