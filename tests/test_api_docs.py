"""docs/api.md lists exactly the names the tf namespace provides, and each one resolves."""
import pathlib

from compiler import tf
from compiler.frontend import api_table

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_api_page_is_current():
    assert DOC.read_text() == api_table.render(), "regenerate: python -m compiler.frontend.api_table > docs/api.md"


def test_every_listed_name_resolves_on_tf():
    for path, names in api_table.collect().items():
        node = tf
        for part in path.split(".")[1:]:
            node = getattr(node, part)
        for public, obj in names.items():
            assert getattr(node, public) is obj, f"{path}.{public}"


def test_seed_ops_are_all_provided():
    seed_ops = """constant zeros zeros_like ones ones_like fill linspace range random_normal truncated_normal
    random_uniform random_shuffle placeholder Variable get_variable add subtract multiply div floordiv mod
    square sqrt pow exp log tanh sigmoid abs negative maximum minimum equal less greater cast add_n matmul
    squared_difference reduce_sum reduce_mean reduce_max reduce_min argmax norm reshape transpose expand_dims
    squeeze concat stack unstack split slice strided_slice gather gather_nd pad tile broadcast_to reverse
    one_hot where shape clip_by_value clip_by_norm clip_by_global_norm global_norm gradients
    global_variables_initializer name_scope variable_scope assign assign_add assign_sub group identity
    stop_gradient set_random_seed""".split()
    nn_ops = """conv2d depthwise_conv2d bias_add max_pool avg_pool relu elu sigmoid tanh softmax log_softmax
    dropout conv2d_transpose softmax_cross_entropy_with_logits sparse_softmax_cross_entropy_with_logits
    sigmoid_cross_entropy_with_logits l2_loss embedding_lookup""".split()
    train = """GradientDescentOptimizer MomentumOptimizer AdamOptimizer AdagradOptimizer RMSPropOptimizer
    exponential_decay ExponentialMovingAverage Saver latest_checkpoint get_checkpoint_state
    get_or_create_global_step""".split()
    missing = [n for n in seed_ops if not hasattr(tf, n)]
    missing += ["nn." + n for n in nn_ops if not hasattr(tf.nn, n)]
    missing += ["train." + n for n in train if not hasattr(tf.train, n)]
    assert not missing, missing
