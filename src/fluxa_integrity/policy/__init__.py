"""The playbook as data: the policy models, the default Fluxa policy and its loader.

``load_policy(path)`` (None: the packaged default) returns a validated ``Policy``; a bad file
raises ``PolicyError`` naming the file, line and column of every problem.
"""

from .durations import format_duration, parse_duration
from .loader import PolicyError, Problem, default_policy, load_policy, parse_policy
from .models import DataClass, Phase, Policy, PolicyProblems
from .rules import RULE_CATEGORIES, Rule

__all__ = ["DataClass", "Phase", "Policy", "PolicyError", "PolicyProblems", "Problem", "RULE_CATEGORIES", "Rule",
           "default_policy", "format_duration", "load_policy", "parse_duration", "parse_policy"]
