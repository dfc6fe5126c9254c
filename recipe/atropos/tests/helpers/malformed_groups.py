"""Malformed ScoredData groups, one per kind of defect, shared by the dict-path and byte-path tests:
each entry is (mutation of a good group, the field the error must name, a fragment of its reason)."""

from __future__ import annotations

import numpy as np

from recipe.atropos.tests.helpers.scored_data_factory import make_group


def good_group():
    return make_group(np.random.default_rng(7), group_size=3, with_advantages=True, with_logprobs=True, env_id=1)


def mutate(path_and_value):
    group = good_group()
    path, value = path_and_value
    target = group
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value(target[path[-1]]) if callable(value) else value
    return group


MALFORMED = {
    "masks shorter than tokens": ((("masks", 1), lambda m: m[:-1]), "masks", "masks[1] has length"),
    "fewer mask rows than sequences": ((("masks",), lambda m: m[:-1]), "masks", "has 2 sequences"),
    "score count differs": ((("scores",), lambda s: s[:-1]), "scores", "2 scores for 3 sequences"),
    "advantages wrong length": ((("advantages", 0), lambda a: a + [0.0]), "advantages", "advantages[0] has length"),
    "logprobs wrong length": ((("inference_logprobs", 2), lambda a: a[1:]), "inference_logprobs", "inference_logprobs[2]"),
    "nan score": ((("scores", 0), float("nan")), "scores", "non-finite"),
    "inf advantage": ((("advantages", 1, 0), float("inf")), "advantages", "non-finite"),
    "nan logprob": ((("inference_logprobs", 1, 0), float("nan")), "inference_logprobs", "non-finite"),
    "empty group": ((("tokens",), []), "tokens", "empty"),
    "empty sequence": ((("tokens", 0), []), "tokens", "tokens[0] is empty"),
    "mask label is another token": ((("masks", 0, -1), 99999), "masks", "neither -100 nor the token id"),
    "no completion token": ((("masks", 1), lambda m: [-100] * len(m)), "masks", "masks[1] has no completion token"),
    "negative token id": ((("tokens", 0, 0), -5), "tokens", "outside"),
    "string score": ((("scores", 0), "high"), "scores", "not a number"),
    "tokens not lists": ((("tokens",), "abc"), "tokens", "list of lists"),
    "overrides wrong count": ((("overrides",), [{}]), "overrides", "one per sequence"),
    "missing masks": ((("masks",), None), "masks", "is missing"),
    "generation_params not an object": ((("generation_params",), [0.7]), "generation_params", "must be an object"),
    "greedy temperature": ((("generation_params",), {"temperature": 0}), "generation_params", "temperature 0 is not"),
    "string temperature in a row's override": ((("overrides",), [{}, {"temperature": "hot"}, {}]), "overrides",
                                               "overrides[1]: temperature 'hot' is not"),
    "temperature as bool": ((("group_overrides",), {"temperature": True}), "group_overrides", "temperature True"),
}
