//! `#[derive(Module)]`: implements `ember_nn::Traverse` for a struct of layers, so a user-defined
//! module gets `parameters()`, `named_parameters()`, `state_dict()`, `train()`/`eval()`, `to()` and
//! the rest of `ember_nn::ModuleExt` with PyTorch's dotted names and no hand-written code.
//!
//! Field rules (by the field's declared type):
//! - `Tensor` is a parameter, `Option<Tensor>` an optional parameter (skipped when `None`);
//! - `#[module(buffer)]` on a `Tensor` / `Option<Tensor>` field makes it a buffer (saved in the
//!   state_dict, not trained);
//! - a `bool` field named `training` is the module's training flag;
//! - primitive fields (numbers, `bool`, `String`, `Vec` of numbers, ...) and fields marked
//!   `#[module(skip)]` are ignored;
//! - every other field is a child module and must implement `Traverse` (layers, `Vec<T>`,
//!   `Option<T>`, `Box<dyn Module>`, `Sequential`, ...).

use proc_macro::TokenStream;
use quote::quote;
use syn::{parse_macro_input, Data, DeriveInput, Fields, GenericArgument, PathArguments, Type};

enum Kind {
    Param,
    OptParam,
    Buffer,
    OptBuffer,
    Training,
    Child,
    Skip,
}

fn last_ident(ty: &Type) -> Option<(String, Option<&Type>)> {
    if let Type::Path(p) = ty {
        let seg = p.path.segments.last()?;
        let inner = match &seg.arguments {
            PathArguments::AngleBracketed(a) => a.args.iter().find_map(|g| match g {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            }),
            _ => None,
        };
        return Some((seg.ident.to_string(), inner));
    }
    None
}

const PRIMITIVES: &[&str] = &[
    "usize",
    "isize",
    "u8",
    "u16",
    "u32",
    "u64",
    "i8",
    "i16",
    "i32",
    "i64",
    "f32",
    "f64",
    "bool",
    "String",
    "char",
    "DType",
    "Device",
    "ConvOptions",
    "PoolOptions",
    "ConvPadding",
    "InterpMode",
    "PadMode",
];

fn is_primitive(ty: &Type) -> bool {
    match ty {
        Type::Reference(_) | Type::Tuple(_) | Type::Array(_) | Type::Ptr(_) => true,
        _ => match last_ident(ty) {
            Some((name, inner)) => {
                PRIMITIVES.contains(&name.as_str())
                    || name == "PhantomData"
                    || ((name == "Vec" || name == "Option") && inner.is_some_and(is_primitive))
            }
            None => false,
        },
    }
}

fn kind_of(field: &syn::Field) -> syn::Result<Kind> {
    let mut buffer = false;
    for attr in &field.attrs {
        if attr.path().is_ident("module") {
            let mut skip = false;
            attr.parse_nested_meta(|m| {
                if m.path.is_ident("skip") {
                    skip = true;
                    Ok(())
                } else if m.path.is_ident("buffer") {
                    buffer = true;
                    Ok(())
                } else {
                    Err(m.error("expected `skip` or `buffer`"))
                }
            })?;
            if skip {
                return Ok(Kind::Skip);
            }
        }
    }
    let name = field.ident.as_ref().map(|i| i.to_string());
    let (last, inner) = last_ident(&field.ty).unwrap_or_default();
    let inner_is_tensor = inner.and_then(last_ident).is_some_and(|(n, _)| n == "Tensor");
    Ok(match (last.as_str(), buffer) {
        ("Tensor", false) => Kind::Param,
        ("Tensor", true) => Kind::Buffer,
        ("Option", false) if inner_is_tensor => Kind::OptParam,
        ("Option", true) if inner_is_tensor => Kind::OptBuffer,
        ("bool", _) if name.as_deref() == Some("training") => Kind::Training,
        _ if is_primitive(&field.ty) => Kind::Skip,
        _ => Kind::Child,
    })
}

/// Derives `ember_nn::Traverse` (see the crate docs for the field rules).
#[proc_macro_derive(Module, attributes(module))]
pub fn derive_module(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// The path to ember-nn from the user's crate: `::ember_nn` when it is a dependency (or the crate
/// itself), `::ember::nn` through the facade.
fn root() -> proc_macro2::TokenStream {
    use proc_macro_crate::{crate_name, FoundCrate};
    match crate_name("ember-nn") {
        Ok(FoundCrate::Itself) => quote!(::ember_nn),
        Ok(FoundCrate::Name(n)) => {
            let id = syn::Ident::new(&n, proc_macro2::Span::call_site());
            quote!(::#id)
        }
        Err(_) => match crate_name("ember") {
            Ok(FoundCrate::Name(n)) => {
                let id = syn::Ident::new(&n, proc_macro2::Span::call_site());
                quote!(::#id::nn)
            }
            _ => quote!(::ember::nn),
        },
    }
}

fn expand(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let name = &input.ident;
    let root = root();
    let (impl_g, ty_g, where_g) = input.generics.split_for_impl();
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(f) => f.named.iter().collect::<Vec<_>>(),
            Fields::Unit => vec![],
            Fields::Unnamed(_) => {
                return Err(syn::Error::new_spanned(
                    name,
                    "#[derive(Module)] needs named fields (they become the state_dict names)",
                ))
            }
        },
        _ => return Err(syn::Error::new_spanned(name, "#[derive(Module)] supports structs only")),
    };
    let mut visit = vec![];
    let mut visit_mut = vec![];
    for f in fields {
        let id = f.ident.as_ref().expect("named field");
        let key = id.to_string();
        match kind_of(f)? {
            Kind::Param => {
                visit.push(quote! { v(#root::Slot::Param(#key, &self.#id)); });
                visit_mut.push(quote! { v(#root::SlotMut::Param(#key, &mut self.#id)); });
            }
            Kind::Buffer => {
                visit.push(quote! { v(#root::Slot::Buffer(#key, &self.#id)); });
                visit_mut.push(quote! { v(#root::SlotMut::Buffer(#key, &mut self.#id)); });
            }
            Kind::OptParam => {
                visit.push(quote! { if let Some(t) = &self.#id { v(#root::Slot::Param(#key, t)); } });
                visit_mut.push(quote! { if let Some(t) = &mut self.#id { v(#root::SlotMut::Param(#key, t)); } });
            }
            Kind::OptBuffer => {
                visit.push(quote! { if let Some(t) = &self.#id { v(#root::Slot::Buffer(#key, t)); } });
                visit_mut.push(quote! { if let Some(t) = &mut self.#id { v(#root::SlotMut::Buffer(#key, t)); } });
            }
            Kind::Training => {
                visit.push(quote! { v(#root::Slot::Training(self.#id)); });
                visit_mut.push(quote! { v(#root::SlotMut::Training(&mut self.#id)); });
            }
            Kind::Child => {
                visit.push(quote! { v(#root::Slot::Child(#key, &self.#id)); });
                visit_mut.push(quote! { v(#root::SlotMut::Child(#key, &mut self.#id)); });
            }
            Kind::Skip => {}
        }
    }
    // `Any` needs `'static`: only structs without lifetime or type parameters offer it
    let plain = input.generics.lifetimes().next().is_none() && input.generics.type_params().next().is_none();
    let as_any = if plain {
        quote! {
            fn as_any_mut(&mut self) -> ::core::option::Option<&mut dyn ::core::any::Any> {
                ::core::option::Option::Some(self)
            }
        }
    } else {
        quote! {}
    };
    Ok(quote! {
        impl #impl_g #root::Traverse for #name #ty_g #where_g {
            #as_any
            fn visit<'__a>(&'__a self, v: &mut dyn FnMut(#root::Slot<'__a>)) {
                #(#visit)*
            }
            fn visit_mut(&mut self, v: &mut dyn FnMut(#root::SlotMut<'_>)) {
                #(#visit_mut)*
            }
        }
    })
}
