"""The `rewardgym` command line.

The libraries are the top-level packages `envs`, `rewards`, `sandbox` and `trainer`; this
package only composes them.
"""

__version__ = "0.1.0"
