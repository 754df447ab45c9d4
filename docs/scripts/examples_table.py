"""The docs' scripts, once: the build runs them (``hooks.py``), the tests check them.

Name (as in ``<!-- output: NAME -->``) -> (script, figures it must write).
"""

EXAMPLES = {
    "ch4_numerical_diff": ("docs/examples/ch4_numerical_diff.py", ["tangent_line.png"]),
    "ch4_gradient": ("docs/examples/ch4_gradient.py", ["gradient_field.png"]),
    "ch4_gradient_descent": ("docs/examples/ch4_gradient_descent.py", ["gradient_descent.png"]),
    "ch4_simple_net": ("docs/examples/ch4_simple_net.py", []),
    "ch4_train_neuralnet": (
        "docs/examples/ch4_train_neuralnet.py",
        ["train_loss.png", "train_accuracy.png"],
    ),
    "dezero_step4": ("docs/examples/dezero_step4.py", []),
    "error_vs_step": ("docs/scripts/error_vs_step.py", ["error_vs_step.png"]),
}
