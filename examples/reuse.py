"""The cases that make or break a scalar autograd engine: values used more than once.

Run:  python examples/reuse.py
"""

from chainrule import Value

# b = a + a: the gradient reaches a along two paths, and the two contributions add up.
a = Value(3.0, label="a")
b = a + a
b.backward()
print(f"b = a + a at a = 3:   db/da = {a.grad}   (an engine that overwrites gives 1.0)")

# a * a at 3: d(a^2)/da = 2a = 6.
a = Value(3.0, label="a")
(a * a).backward()
print(f"a * a at a = 3:       d/da  = {a.grad}")

# a and b each feed two nodes, d and e, which meet again in f = d * e = (a*b) * (a+b).
# Calculus: df/da = b*(a+b) + a*b = 2ab + b^2 = -3;  df/db = a*(a+b) + a*b = a^2 + 2ab = -8.
a, b = Value(-2.0, label="a"), Value(3.0, label="b")
d = a * b
e = a + b
f = d * e
f.backward()
print(f"f = (a*b)*(a+b) at a = -2, b = 3:   df/da = {a.grad}, df/db = {b.grad}")

# Reuse compounds: c = b + b with b = a + a gives dc/da = 4.
a = Value(1.0, label="a")
b = a + a
c = b + b
c.backward()
print(f"c = (a+a)+(a+a):      dc/da = {a.grad}")

# Calling backward twice without zeroing adds the gradient twice, at every node.
a = Value(1.0, label="a")
b = a * 2
c = b * 3
c.backward()
first = a.grad
c.backward()
print(f"backward twice on c = (a*2)*3:   a.grad {first} then {a.grad} (micrograd gives 6 then 18)")
