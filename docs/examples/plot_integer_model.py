"""
What an integer model looks like
================================

Every weight of a fitted sknitro model is an int32, every activation and score an int8.
This example shows the distribution of the weights of each layer and the integer class
scores returned by :meth:`~sknitro.NitroMLPClassifier.decision_function`.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits

from sknitro import NitroMLPClassifier

X, y = load_digits(return_X_y=True)
clf = NitroMLPClassifier(hidden_layer_sizes=(64,), max_iter=15, n_iter_no_change=15,
                        random_state=0).fit(X, y)

scores = clf.decision_function(X[:200])
print("weights:", [w.dtype.name for w in clf.weights_], "scores:", scores.dtype.name)
print("weight ranges:", [(int(w.min()), int(w.max())) for w in clf.weights_])

fig, axes = plt.subplots(1, 3, figsize=(10, 3))
for ax, weights, name in zip(axes, clf.weights_, ["block 1 (64 x 64)", "output (10 x 64)"]):
    values, counts = np.unique(weights, return_counts=True)
    ax.bar(values, counts, width=1.0)
    ax.set_title(f"int32 weights, {name}")
    ax.set_xlabel("weight")
true_scores = scores[np.arange(len(scores)), y[:200]]
other_scores = np.delete(scores, y[:200] + 10 * np.arange(len(scores)))
axes[2].hist([other_scores, true_scores], bins=np.arange(-40, 80, 4), label=["other classes", "true class"])
axes[2].axvline(clf.target_value, color="k", linestyle=":", label="target_value")
axes[2].set_title("int8 scores")
axes[2].legend(fontsize=7)
fig.tight_layout()
plt.show()
