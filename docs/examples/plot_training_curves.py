"""
Training curves of an integer MLP
=================================

Train :class:`sknitro.NitroMLPClassifier` on the digits with a validation split and plot,
per epoch, the training and validation accuracy and the accuracy of each block's learning
head. Each block learns from its own head only; the head accuracies show how much class
information each block carries.
"""

import matplotlib.pyplot as plt
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sknitro import NitroMLPClassifier

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
clf = NitroMLPClassifier(hidden_layer_sizes=(128, 64), early_stopping=True, max_iter=40,
                         n_iter_no_change=10, random_state=0)
clf.fit(X_train, y_train)
print(f"test accuracy {clf.score(X_test, y_test):.3f} after {clf.n_iter_} epochs")

epochs = [record["epoch"] for record in clf.history_]
fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(epochs, [r["train_accuracy"] for r in clf.history_], label="training (output layer)")
ax.plot(epochs, clf.validation_scores_, label="validation (output layer)")
for i in range(len(clf.hidden_layer_sizes)):
    ax.plot(epochs, [r["head_accuracies"][i] for r in clf.history_], "--",
            label=f"head of block {i + 1} (training)")
ax.set_xlabel("epoch")
ax.set_ylabel("accuracy")
ax.set_ylim(0.5, 1.0)
ax.legend()
ax.set_title("Integer-only training on the digits")
fig.tight_layout()
plt.show()
