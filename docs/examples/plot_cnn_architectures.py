"""
Integer CNNs of different depths
================================

:class:`sknitro.NitroCNNClassifier` on the 8x8 digit images, as ``(n, 1, 8, 8)`` uint8
arrays. One conv block is compared with two, on the same split and seed; each conv block
has its own learning head, so the validation curve of the deeper network shows how long the
second block takes to catch up.
"""

import matplotlib.pyplot as plt
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sknitro import NitroCNNClassifier

X, y = load_digits(return_X_y=True)
images = X.reshape(-1, 1, 8, 8).astype("uint8")
X_train, X_test, y_train, y_test = train_test_split(images, y, random_state=0)

fig, ax = plt.subplots(figsize=(6, 4))
for architecture in [(16, "M"), (16, "M", 32, "M")]:
    cnn = NitroCNNClassifier(architecture=architecture, early_stopping=True, max_iter=20,
                             n_iter_no_change=8, random_state=0)
    cnn.fit(X_train, y_train)
    print(f"{architecture}: test accuracy {cnn.score(X_test, y_test):.3f}, "
          f"head accuracies {[round(a, 3) for a in cnn.head_accuracies_]}")
    ax.plot(range(1, cnn.n_iter_ + 1), cnn.validation_scores_, label=str(architecture))
ax.set_xlabel("epoch")
ax.set_ylabel("validation accuracy")
ax.legend(title="architecture")
ax.set_title("Integer CNNs on the digits")
fig.tight_layout()
plt.show()
