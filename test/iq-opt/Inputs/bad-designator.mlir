// expected-error@sideways {{x}}
