"""Matrix-based Renyi entropy, joint entropy and mutual information (exact, low-rank, randomized)."""
