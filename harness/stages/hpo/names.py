"""Names an hpo stage's trials and outputs share with its select step (and the scripts that read them)."""

#: the search's metric (what Optuna minimises), the proposal number, its parameters and its whole config (the
#: last two as JSON tags, ``sl2o.search_params`` and ``sl2o.optimizer_config``)
OBJECTIVE, INDEX, PARAMS, CONFIG = "objective", "search_index", "search_params", "optimizer_config"
#: the stage's output: the chosen config and how it was chosen
CHOSEN_FILE = "optimizer.json"
#: a rule's equation, copied beside the chosen config so that later stages read the stage's own file
RULE_FILE = "equation.json"
