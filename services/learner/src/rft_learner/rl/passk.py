"""pass@k: the chance that at least one of k samples is correct, estimated from n >= k samples.

Pure Python (no torch), so evaluation code may import it on its own.
"""

import math


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate from n samples of which c are correct.

        pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n - c + 1}^{n} (1 - k / i)

    Chen et al. 2021, "Evaluating Large Language Models Trained on Code", arXiv 2107.03374
    (the product form avoids huge binomials). It is 1 when n - c < k (every k-subset holds a
    correct sample). Raises ValueError unless 1 <= k <= n and 0 <= c <= n.
    """
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got c={c}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_pass_at_k(correct_counts: list[int], n: int, k: int) -> float:
    """Mean of :func:`pass_at_k` over problems, each sampled n times with correct_counts[i] correct."""
    if not correct_counts:
        raise ValueError("mean_pass_at_k needs at least one problem")
    return sum(pass_at_k(n, c, k) for c in correct_counts) / len(correct_counts)
