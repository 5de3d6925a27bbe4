// A module with iq.config whose attention reads q, k and v straight from
// the function's arguments, so no projections can be found.
module attributes {iq.config = {ffn_size = 172 : i64, head_dim = 8 : i64, hidden_size = 64 : i64, layers = 1 : i64, norm_epsilon = 1.0e-5 : f32, num_heads = 8 : i64, num_kv_heads = 4 : i64, rope_style = "half", rope_theta = 1.0e4 : f32, vocab_size = 512 : i64}} {
  func.func @forward(%q: tensor<1x?x64xf32>, %k: tensor<1x?x32xf32>, %v: tensor<1x?x32xf32>,
                     %k_cache: tensor<1x4x?x8xf32>, %v_cache: tensor<1x4x?x8xf32>, %positions: tensor<1x?xi64>)
      -> tensor<1x?x64xf32> {
    %out, %k_next, %v_next = "iq.attention"(%q, %k, %v, %k_cache, %v_cache, %positions)
        {num_heads = 8 : i64, num_kv_heads = 4 : i64, scale = 0.353553385 : f32}
        : (tensor<1x?x64xf32>, tensor<1x?x32xf32>, tensor<1x?x32xf32>, tensor<1x4x?x8xf32>, tensor<1x4x?x8xf32>, tensor<1x?xi64>)
        -> (tensor<1x?x64xf32>, tensor<1x4x?x8xf32>, tensor<1x4x?x8xf32>)
    return %out : tensor<1x?x64xf32>
  }
}
