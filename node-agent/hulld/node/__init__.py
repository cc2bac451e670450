"""Host resources hulld manages for pods, one small module each: CNI networking, namespaces, cgroups."""
