"""Debate games: two strong debaters argue before a weak judge (`pixel`: the MNIST pixel debate of
Irving, Christiano & Amodei 2018, "AI safety via debate", Sec. 3)."""
