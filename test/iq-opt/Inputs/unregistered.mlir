"other.op"() : () -> ()
